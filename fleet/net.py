"""Many paho MQTT clients driven by one thread of one process.

`transport/mqtt.py`'s `MqttLink` gives each client paho's own network thread, which is what
one device needs. Hundreds of devices in one process would be hundreds of threads contending
for one GIL, each waking on its own timer; instead `Pump` polls every client's socket at once
(`select.poll`, no FD_SETSIZE bound) and calls paho's `loop_read`, `loop_write` and
`loop_misc` itself, the documented way of running paho inside another event loop. Messages
land in one queue that the caller drains between polls, on the same thread: nothing here is
shared across threads.

A TLS socket may hold decrypted bytes that the kernel no longer shows as readable
(`SSLSocket.pending`); those clients are read again without waiting, as paho's own loop does.
"""

from __future__ import annotations

import contextlib
import select
import ssl
import time
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from genofed.transport.mqtt import QOS

MISC_S = 1.0  # how often paho's keepalive and retry bookkeeping runs for every client
KEEPALIVE_S = 120  # the daemon's is 30; one thread serves hundreds of devices here


class Pump:
    """The clients of one process and the deliveries they received, in arrival order."""

    def __init__(self) -> None:
        self.clients: dict[str, mqtt.Client] = {}
        self.received: deque[tuple[str, str, bytes, bool]] = deque()  # name, topic, payload, dup
        self.connected: set[str] = set()
        self._misc_at = 0.0

    def add(self, name: str, client_id: str, host: str, port: int, *, ca: Path, cert: Path,
            key: Path, subscriptions: list[str], will: tuple[str, bytes],
            birth: tuple[str, bytes], session_expiry_s: int = 3600) -> mqtt.Client:
        """Connect one device's client (TCP and the TLS handshake happen here, blocking): MQTT
        v5, clean start off with a session expiry (its session persists), its will set; its
        subscriptions and birth message go out once the broker accepts it."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key),
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(will[0], will[1], qos=QOS, retain=True)

        def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                return
            for t in subscriptions:
                client.subscribe(t, qos=QOS)
            client.publish(birth[0], birth[1], qos=QOS, retain=True)
            self.connected.add(name)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            self.received.append((name, msg.topic, bytes(msg.payload), bool(msg.dup)))

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
            self.connected.discard(name)

        c.on_connect, c.on_message, c.on_disconnect = on_connect, on_message, on_disconnect
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        c.connect(host, port, keepalive=KEEPALIVE_S, clean_start=False, properties=props)
        self.clients[name] = c
        return c

    def drop(self, name: str) -> None:
        """Vanish without a DISCONNECT, as a device losing power: the broker sends its will."""
        c = self.clients.pop(name, None)
        if c is not None:
            sock = c.socket()
            if sock is not None:
                sock.close()
        self.connected.discard(name)

    def poll(self, timeout_s: float) -> None:
        """Move bytes: read what came, write what is queued, then keepalives now and then."""
        socks: dict[int, tuple[Any, mqtt.Client]] = {}
        poller = select.poll()
        pending = []
        for c in self.clients.values():
            s = c.socket()
            if s is None:
                continue
            socks[s.fileno()] = (s, c)
            poller.register(s, select.POLLIN | (select.POLLOUT if c.want_write() else 0))
            if isinstance(s, ssl.SSLSocket) and s.pending():
                pending.append(c)
        for fd, ev in poller.poll(0 if pending else timeout_s * 1000):
            _, c = socks[fd]
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                c.loop_read()
            if ev & select.POLLOUT:
                c.loop_write()
        for c in pending:
            c.loop_read()
        now = time.monotonic()
        if now - self._misc_at >= MISC_S:
            self._misc_at = now
            for c in self.clients.values():
                c.loop_misc()
                if c.socket() is None:  # the connection was lost: the session persists
                    with contextlib.suppress(OSError):  # the broker is away: again later
                        c.reconnect()

    def publish(self, name: str, topic: str, payload: bytes) -> None:
        """Queue one QoS 1 message; paho retries it until the broker acknowledges it."""
        c = self.clients.get(name)
        if c is not None:
            c.publish(topic, payload, qos=QOS)

    def close(self) -> None:
        for c in self.clients.values():
            c.disconnect()
        for _ in range(20):
            self.poll(0.01)
        self.clients.clear()
