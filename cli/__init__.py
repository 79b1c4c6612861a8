"""genofed.cli."""
