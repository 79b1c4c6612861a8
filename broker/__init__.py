"""genofed.broker: the MQTT broker of a deployment (PKI, Mosquitto configuration, ACL)."""
