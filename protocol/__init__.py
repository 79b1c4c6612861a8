"""genofed.protocol."""
