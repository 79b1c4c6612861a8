"""Helpers for tests that run a federation on a real Mosquitto (TLS, client certificates)."""

from __future__ import annotations

import json
import queue
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from genofed.aggregator.state import enroll_device
from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.pki import PkiLayout
from genofed.protocol.secagg import SigningIdentity
from genofed.protocol.topics import Topics


def client(root: Path, identity: str) -> mqtt.Client:
    """A paho client with `identity`'s certificate from the demo layout under `root/broker`."""
    pki = PkiLayout(root / "broker")
    ident = pki.client(identity)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"test-{identity}-{time.time_ns()}", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(pki.ca_cert), certfile=str(ident.cert), keyfile=str(ident.key),
              cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return c


def wait_retained(root: Path, port: int, topic: str, timeout_s: float = 120) -> bytes:
    """Block until `topic` holds a retained message; return it (read as the admin)."""
    got: queue.Queue[bytes] = queue.Queue()
    c = client(root, "admin")
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.on_message = lambda cl, u, msg: got.put(bytes(msg.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        return got.get(timeout=timeout_s)
    finally:
        c.disconnect()
        c.loop_stop()


def mosquitto_pub(root: Path, port: int, identity: str, topic: str, payload: bytes, *,
                  retain: bool = False) -> None:
    """Publish one raw payload with the `mosquitto_pub` command, as `identity`."""
    pki = PkiLayout(root / "broker")
    ident = pki.client(identity)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile",
                    str(pki.ca_cert), "--cert", str(ident.cert), "--key", str(ident.key),
                    "-q", "1", *(["-r"] if retain else []), "-t", topic,
                    *(["-s"] if payload else ["-n"])], input=payload, check=True, timeout=30)


class Recorder:
    """A subscriber on `#` as the admin: keeps every payload it sees, by topic."""

    def __init__(self, root: Path, port: int) -> None:
        self.payloads: list[tuple[str, bytes]] = []
        self.c = client(root, "admin")
        self.c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("#", qos=1)
        self.c.on_message = lambda cl, u, msg: self.payloads.append(
            (msg.topic, bytes(msg.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def ghost(root: Path, port: int, state: str = "online") -> None:
    """The enrolled device `ghost` says it is `state` and never answers a round: a round that
    picks it waits for it until the stage deadline (a window the tests act in)."""
    mosquitto_pub(root, port, "ghost", Topics("demo").status("ghost"),
                  json.dumps({"device": "ghost", "state": state}).encode(), retain=True)


def enroll_ghost(root: Path) -> None:
    enroll_device(root / "state" / "aggregator", "ghost",
                  SigningIdentity.generate().public.raw.hex())


def wait_until(what: str, pred: Callable[[], bool], timeout_s: float = 180) -> None:
    """Poll `pred` until it holds; fail naming `what` (a safety net, not a timing claim)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def wait_connected(root: Path, names: list[str]) -> None:
    """Until every agent in `names` has logged its broker connection (its retained status
    then online), so an aggregator started next draws its first cohort from all of them."""
    wait_until("every agent to connect", lambda: all(
        "connected to" in (root / "logs" / f"{n}.log").read_text() for n in names))


def stored_messages(db: Path, round_: int, stage: str) -> int:
    """How many messages of `stage` the aggregator has stored for `round_` (read-only)."""
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        try:
            row = con.execute("SELECT COUNT(*) FROM messages WHERE round=? AND stage=?",
                              (round_, stage)).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def logs(root: Path) -> str:
    """The tail of every process log under `root/logs`, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                     for p in sorted((root / "logs").glob("*.log")))


def codec_atol(n: int, *, scale: float = 1e6) -> float:
    """How far the decoded mean of n updates may lie from the plain one, per coordinate: six
    standard deviations of the stochastic rounding, plus float32 storage of the model.

    Each device rounds every rotated coordinate up or down at random (variance <= 1/4, and
    independent); the inverse rotation is orthogonal, so each coordinate of the sum of n
    devices has variance <= n/4, in units of 1/scale; the mean divides it by n. The bound is
    exceeded with probability ~2e-9 per coordinate."""
    sd = (n / 4) ** 0.5 / scale / n
    return 6 * sd + 1e-7


def exit_status(proc: subprocess.Popen[bytes], root: Path, timeout_s: float) -> int:
    """`proc`'s exit status; if it is still running after `timeout_s`, fail with every log
    under `root/logs` (a bare TimeoutExpired would hide why it hung)."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(map(str, proc.args))} still running after "
                             f"{timeout_s:.0f} s\n{logs(root)}") from None


def all_exit_cleanly(root: Path, aggregator: subprocess.Popen[bytes],
                     agents: list[subprocess.Popen[bytes]], timeout_s: float = 300) -> None:
    """The aggregator ends its rounds and every agent follows, each with status 0."""
    assert exit_status(aggregator, root, timeout_s) == 0, logs(root)
    for p in agents:
        assert exit_status(p, root, 60) == 0, logs(root)


def stop_all(procs: list[subprocess.Popen[bytes]], broker: LocalMosquitto) -> None:
    """Kill whatever a test left running and stop its broker."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    broker.stop()


FOUR = [f"dev{i:02d}" for i in range(4)]


def run_four(root: Path, cohort: Path, bundle: Path, prepare: Callable[[Path], None],
             **configs: Any) -> None:
    """Two rounds of the four devices FOUR (dev03 on dev00's data) on a real broker, three
    needed per round, 5 s stages; `prepare(aggregator config)` changes the configs or the
    owners' consents before anything starts; returns once every process exited with 0.
    `configs` go to `write_configs`."""
    from genofed.cli.demo import spawn_federation, start_broker, write_configs

    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    broker = start_broker(root, FOUR)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(root, bundle, [dirs[i % 3] for i in range(4)], broker.port,
                            rounds=2, min_participants=3, names=FOUR, stage_timeout_s=5.0,
                            **configs)
        prepare(cfg)
        procs = spawn_federation(root, cfg, FOUR)
        all_exit_cleanly(root, procs[0], procs[1:])
    finally:
        stop_all(procs, broker)
