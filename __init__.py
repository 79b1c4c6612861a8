"""genofed: federated learning on personal genomic data, trained at the edge."""

__version__ = "0.1.0"
