"""genofed.export."""
