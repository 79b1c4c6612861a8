"""What the holder of one valid device certificate can do to the broker, for tests and the
broker benchmark: flood its own outbox (`Flooder`), and ask for other clients' ids
(`Thief`); and whether the broker lets a certificate in (`tls_accepts`).

`Flooder` publishes payloads of a fixed size at a fixed rate, QoS 1, speaking just enough MQTT
v5 over TLS (CONNECT, PUBLISH) and never waiting for an acknowledgement: a broker that refuses
a packet (too large) disconnects it, and it connects again at the next tick, so the rate
holds whatever the broker does. Acknowledgements are read and counted on the side.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from genofed.broker.pki import PkiLayout


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    return struct.pack(">H", len(s)) + s.encode()


def connect_packet(client_id: str) -> bytes:
    """CONNECT, MQTT v5, clean start, keepalive 60 s, no properties."""
    body = _string("MQTT") + bytes([5, 0x02]) + struct.pack(">H", 60) + b"\x00"
    body += _string(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1, no properties."""
    body = _string(topic) + struct.pack(">H", packet_id) + b"\x00" + payload
    return b"\x32" + _varint(len(body)) + body


def _split(buf: bytes) -> tuple[int, bytes] | None:
    """The first whole packet's type and what follows it, or None if it is not all here."""
    n, shift = 0, 0
    for i in range(1, min(len(buf), 5)):
        n |= (buf[i] & 0x7F) << shift
        shift += 7
        if not buf[i] & 0x80:
            end = i + 1 + n
            return (buf[0] >> 4, buf[end:]) if len(buf) >= end else None
    return None


@dataclass
class FloodStats:
    sent: int = 0  # packets written whole to the socket
    acked: int = 0  # PUBACKs read (any reason code)
    connects: int = 0
    refused: int = 0  # connections the broker closed under us


class Flooder:
    """Publish `size`-byte payloads on `topic` at `rate` a second as `identity`, from a
    thread, until `stop()`."""

    def __init__(self, broker_dir: Path, port: int, identity: str, topic: str, *, size: int,
                 rate: float, client_id: str | None = None) -> None:
        self.ctx = _context(broker_dir, identity)
        self.port, self.topic, self.size, self.rate = port, topic, size, rate
        self.client_id = client_id or f"flood-{identity}"
        self.stats = FloodStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> Flooder:
        self._thread.start()
        return self

    def stop(self) -> FloodStats:
        self._stop.set()
        self._thread.join(30)
        return self.stats

    def _connect(self) -> ssl.SSLSocket | None:
        try:
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock = self.ctx.wrap_socket(raw)
            sock.sendall(connect_packet(self.client_id))
            if sock.recv(1)[:1] != b"\x20":  # CONNACK
                sock.close()
                return None
        except OSError:
            return None
        self.stats.connects += 1
        threading.Thread(target=self._read_acks, args=(sock,), daemon=True).start()
        return sock

    def _read_acks(self, sock: ssl.SSLSocket) -> None:
        """Count the PUBACKs among the packets the broker sends back."""
        buf = b""
        try:
            while not self._stop.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                while (packet := _split(buf)) is not None:
                    kind, buf = packet
                    if kind == 4:
                        with self._lock:
                            self.stats.acked += 1
        except OSError:
            return

    def _run(self) -> None:
        payload = bytes(self.size)
        sock: ssl.SSLSocket | None = None
        packet_id, t = 0, time.monotonic()
        while not self._stop.is_set():
            if sock is None:
                sock = self._connect()
            if sock is not None:
                packet_id = packet_id % 65535 + 1
                try:
                    sock.sendall(publish_packet(self.topic, payload, packet_id))
                    self.stats.sent += 1
                except OSError:
                    self.stats.refused += 1
                    sock.close()
                    sock = None
            t += 1 / self.rate
            self._stop.wait(max(0.0, t - time.monotonic()))
        if sock is not None:
            sock.close()


def _context(broker_dir: Path, identity: str) -> ssl.SSLContext:
    pki = PkiLayout(broker_dir)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki.client(identity).cert), str(pki.client(identity).key))
    return ctx


def tls_accepts(broker_dir: Path, port: int, identity: str, client_id: str = "probe") -> bool:
    """Whether the broker completes a TLS handshake with `identity`'s certificate and
    accepts a clean-start CONNECT asking for `client_id`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                _context(broker_dir, identity).wrap_socket(raw) as tls:
            tls.sendall(connect_packet(client_id))
            return tls.recv(4)[:1] == b"\x20"
    except OSError:  # ssl.SSLError included: the handshake failed
        return False


class Thief:
    """Connect as `identity`, clean start, asking for each of `client_ids` in turn, `rate`
    times a second, from a thread: were ids not bound to certificates, each connection would
    take over (and wipe) that client's session."""

    def __init__(self, broker_dir: Path, port: int, identity: str, client_ids: list[str], *,
                 rate: float = 5.0) -> None:
        self.args = (broker_dir, port, identity)
        self.client_ids, self.rate = client_ids, rate
        self.attempts = self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Thief:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for cid in self.client_ids:
                self.attempts += 1
                self.accepted += tls_accepts(*self.args, client_id=cid)
            self._stop.wait(1 / self.rate)
