"""genofed.transport: the MQTT link both daemons talk through (paho-mqtt behind a small API)."""
