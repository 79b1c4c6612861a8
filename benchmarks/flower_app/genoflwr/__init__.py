"""The Flower side of genofed's device_vs_flower benchmark."""
