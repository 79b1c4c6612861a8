"""genofed.models."""
