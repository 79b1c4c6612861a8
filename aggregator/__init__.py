"""genofed.aggregator: the aggregator service, its I/O-free core and its durable state."""
