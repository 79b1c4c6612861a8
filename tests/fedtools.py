"""Helpers for tests that run a federation on a real Mosquitto."""

from __future__ import annotations

import queue
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt


def wait_retained(port: int, topic: str, timeout_s: float = 120) -> bytes:
    """Block until `topic` holds a retained message; return it."""
    got: queue.Queue[bytes] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{time.time_ns()}",
                    protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.on_message = lambda cl, u, msg: got.put(bytes(msg.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        return got.get(timeout=timeout_s)
    finally:
        c.disconnect()
        c.loop_stop()


def inject(port: int, topic: str, payloads: list[bytes]) -> None:
    """Publish raw payloads as an outsider would (mosquitto_pub would do the same)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder",
                    protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def wait_until(what: str, pred: Callable[[], bool], timeout_s: float = 180) -> None:
    """Poll `pred` until it holds; fail naming `what` (a safety net, not a timing claim)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def stored_updates(db: Path, round_: int) -> int:
    """How many updates the aggregator has stored for `round_` (read-only)."""
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        try:
            row = con.execute("SELECT COUNT(*) FROM messages WHERE round=? AND stage='update'",
                              (round_,)).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def logs(root: Path) -> str:
    """The tail of every process log under `root/logs`, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                     for p in sorted((root / "logs").glob("*.log")))
