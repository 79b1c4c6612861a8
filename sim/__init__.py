"""genofed.sim."""
