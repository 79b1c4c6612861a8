"""MQTT plumbing shared by the agent and the aggregator: paho-mqtt 2.x kept behind a small API.

The protocol logic never sees paho: it gets (topic, payload) pairs from `MqttLink.inbox` and
hands payloads to `MqttLink.publish`. Sessions are MQTT v5 with clean start off and a session
expiry, so QoS 1 messages queued while a device was away are delivered when it comes back.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from genofed.errors import GenofedError, LocalInputError

log = logging.getLogger(__name__)
QOS = 1
REPORT_S = 30.0  # how often a wait for the broker says why it is still waiting
FIRST_REPORT_S = 5.0  # ... and when it first says so


class LinkStopped(GenofedError):
    """The daemon was asked to stop (or the client's queue is full) while waiting on the
    broker: nothing is lost that was acknowledged, the next start carries on."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and, for TLS, this client's identity (all three files, or none)."""

    host: str = "127.0.0.1"
    port: int = 1883
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise LocalInputError(f"[broker] port must be 1-65535, got {self.port}")
        given = [f for f in (self.ca, self.cert, self.key) if f is not None]
        if given and len(given) != 3:
            raise LocalInputError("[broker] TLS needs all of ca, cert and key, or none of them")

    @property
    def tls(self) -> bool:
        return self.ca is not None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}"


@dataclass(frozen=True)
class Received:
    """One delivered message. With manual acknowledgement, call `ack()` once it is safe."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    link: MqttLink | None = None
    dup: bool = False  # MQTT's DUP: the broker sends it again (after a reconnection)

    def ack(self) -> None:
        """Acknowledge to the broker (QoS 1); until then the broker keeps it for redelivery."""
        if self.link is not None and self.qos > 0:
            self.link._client.ack(self.mid, self.qos)


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


class MqttLink:
    """One MQTT connection: subscriptions restored on every reconnect, QoS 1, byte counters."""

    def __init__(self, client_id: str, broker: BrokerAddress, *, subscriptions: list[str],
                 will: Will | None = None, birth: Will | None = None,
                 session_expiry_s: int = 3600, manual_ack: bool = False,
                 stop: threading.Event | None = None) -> None:
        self.broker = broker
        self.birth = birth  # published on every (re)connection, e.g. a retained "online"
        self.subscriptions = list(subscriptions)
        self.manual_ack = manual_ack
        self.inbox: queue.Queue[Received] = queue.Queue()
        self.bytes_in = 0
        self.bytes_out = 0
        self._connected = threading.Event()
        self.connections = 0  # how many times the connection came up
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._acked: dict[int, threading.Event] = {}  # mid -> set once the broker has it
        self._untracked: set[int] = set()  # mids of the birth message, which nobody awaits
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                    protocol=mqtt.MQTTv5, manual_ack=manual_ack)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        if broker.tls:
            self._set_tls(broker)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=QOS, retain=will.retain)
        self._connect_props = Properties(PacketTypes.CONNECT)
        self._connect_props.SessionExpiryInterval = session_expiry_s
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    def _set_tls(self, b: BrokerAddress) -> None:
        for f in (b.ca, b.cert, b.key):
            if f is not None and not f.is_file():
                raise LocalInputError(f"{f}: TLS file not found")
        try:
            self._client.tls_set(ca_certs=str(b.ca), certfile=str(b.cert), keyfile=str(b.key),
                                 cert_reqs=ssl.CERT_REQUIRED,
                                 tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise LocalInputError(f"{b.cert}: cannot use this TLS identity: {exc}") from None

    def start(self, timeout_s: float | None = None) -> None:
        """Connect, and wait until the first connection is up: as long as it takes (a broker
        down at boot, a clock that fails TLS), saying why every `REPORT_S`, unless `stop`
        (LinkStopped) or, for tools and tests, `timeout_s` passes (LocalInputError)."""
        try:
            self._client.connect_async(self.broker.host, self.broker.port, keepalive=30,
                                       clean_start=False, properties=self._connect_props)
        except (OSError, ValueError) as exc:
            raise LocalInputError(f"MQTT broker {self.broker}: {exc}") from None
        self._client.loop_start()
        waited, step = 0.0, FIRST_REPORT_S
        if timeout_s is not None:
            step = min(step, timeout_s)
        while not self._connected.wait(step):
            if self._stop.is_set():
                raise LinkStopped(f"stopped before the broker {self.broker} answered")
            if timeout_s is not None and waited + step >= timeout_s:
                self._client.loop_stop()
                raise LocalInputError(f"MQTT broker {self.broker}: no connection within "
                                      f"{timeout_s:.0f} s: {diagnose(self.broker)}")
            self._keep_looping()
            waited, step = waited + step, REPORT_S
            log.warning("no connection to the broker %s after %.0f s: %s; still trying",
                        self.broker, waited, diagnose(self.broker))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it. While the broker is
        away the message waits in the client's queue and goes out when the connection is
        back (the session survives); this waits with it, however long, unless `stop` is set
        (LinkStopped)."""
        self.publish_many([(topic, payload, retain)])

    def publish_many(self, messages: list[tuple[str, bytes, bool]]) -> None:
        """Publish (topic, payload, retain) messages at QoS 1, in order, and return once the
        broker has acknowledged every one: all are queued before the first acknowledgement
        is awaited (one connection keeps them in order), so n messages cost one round trip
        to the broker, not n."""
        # Not under self._lock: paho calls on_publish holding its own message lock, which
        # publish() takes too. The acknowledgement may come before we look for it: both sides
        # setdefault the same Event.
        sent = []
        for topic, payload, retain in messages:
            info = self._client.publish(topic, payload, qos=QOS, retain=retain)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                raise LinkStopped(f"MQTT client queue full publishing to {topic}")
            with self._lock:
                sent.append((topic, len(payload), info.mid,
                             self._acked.setdefault(info.mid, threading.Event())))
        for topic, size, mid, done in sent:
            waited = 0.0
            while not done.wait(REPORT_S):
                if self._stop.is_set():
                    raise LinkStopped(f"stopped with a publish to {topic} not yet acknowledged")
                self._keep_looping()
                waited += REPORT_S
                log.warning("publish to %s not acknowledged after %.0f s (broker %s %s); "
                            "waiting", topic, waited, self.broker,
                            "connected" if self.connected else "unreachable")
            with self._lock:
                self._acked.pop(mid, None)
                self.bytes_out += size

    def _keep_looping(self) -> None:
        """Restart paho's network thread if an exception it did not expect ended it (it would
        never reconnect otherwise). paho has no public way to ask; its `_thread` is None once
        the thread has ended."""
        if self._client._thread is None and not self._stop.is_set():
            log.error("the MQTT network thread had ended; starting it again")
            self._client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (no will message) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the connection: %s", self.broker, reason)
            return
        log.info("connected to %s (session present: %s)", self.broker,
                 getattr(flags, "session_present", "?"))
        self.connections += 1
        for topic in self.subscriptions:
            client.subscribe(topic, qos=QOS)
        if self.birth is not None:
            info = client.publish(self.birth.topic, self.birth.payload, qos=QOS,
                                  retain=self.birth.retain)
            self._untracked.add(info.mid)  # on_publish runs on this thread, after this
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        if reason != 0:
            log.warning("lost the broker %s (%s); reconnecting", self.broker, reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            if mid in self._untracked:  # nobody waits for it: keep no entry
                self._untracked.discard(mid)
                return
            self._acked.setdefault(mid, threading.Event()).set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.bytes_in += len(msg.payload)
        self.inbox.put(Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos,
                                self if self.manual_ack else None, bool(msg.dup)))


def diagnose(broker: BrokerAddress, timeout_s: float = 5.0) -> str:
    """Why a connection to `broker` fails, in a line: a TCP connection and, for TLS, a
    handshake with this client's identity, tried directly (paho retries without saying)."""
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=timeout_s)
    except OSError as exc:
        return f"cannot reach {broker.host}:{broker.port}: {exc.strerror or exc}"
    with sock:
        if not broker.tls:
            return "the port answers, but the broker did not accept the MQTT connection"
        ctx = ssl.create_default_context(cafile=str(broker.ca))
        ctx.check_hostname = False  # paho checks the host name; here only the chain matters
        ctx.load_cert_chain(str(broker.cert), str(broker.key))
        try:
            with ctx.wrap_socket(sock, server_hostname=broker.host):
                pass
        except ssl.SSLCertVerificationError as exc:
            now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            hint = (f"; this machine's clock says {now}: is it right?"
                    if "not yet valid" in str(exc) or "expired" in str(exc) else "")
            return f"TLS: {exc.verify_message}{hint}"
        except (ssl.SSLError, OSError) as exc:
            return f"TLS handshake failed: {exc}"
    return "TLS handshake succeeds; the broker refused the MQTT connection (see its log)"
