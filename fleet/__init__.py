"""A fleet of virtual devices: many real MQTT clients in a few processes, each running the
agent's round logic against the real aggregator over a real Mosquitto (`python -m
genofed.fleet`, `genofed bench scale`, `tests/integration/test_fleet.py`)."""
