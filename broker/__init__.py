"""genofed.broker."""
