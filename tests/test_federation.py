"""Real parts end to end: Mosquitto, the aggregator and three agent processes, two rounds."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.service import model_path, read_journal
from genofed.cli.demo import spawn, write_configs
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration


def _inject(port: int, topic: str, payloads: list[bytes]) -> None:
    """Publish raw payloads as an outsider would (mosquitto_pub would do the same)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder",
                    protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_two_rounds_three_agents(tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    assert len(devices) == 3
    procs: list[subprocess.Popen[bytes]] = []
    (tmp_path / "logs").mkdir()
    with LocalMosquitto(tmp_path / "broker") as broker:
        agg_cfg = write_configs(tmp_path, logreg_bundle, devices, broker.port, rounds=2,
                                min_updates=3)
        try:
            procs.append(spawn(["aggregator", "run", "--config", str(agg_cfg)],
                               tmp_path / "logs" / "aggregator.log"))
            _wait_for(model_path(tmp_path / "state" / "aggregator", 0), procs[0])
            _inject(broker.port, Topics("demo").outbox(devices[0].name),
                    [b"garbage", b"GFD1\x00\x00\x00\x02{}", b""])
            for d in devices:
                procs.append(spawn(["agent", "run", "--config",
                                    str(tmp_path / "config" / f"{d.name}.toml")],
                                   tmp_path / "logs" / f"{d.name}.log"))
            assert procs[0].wait(timeout=300) == 0, _logs(tmp_path)
            for p in procs[1:]:
                assert p.wait(timeout=60) == 0, _logs(tmp_path)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()

    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state)
    assert [r["status"] for r in journal] == ["completed", "completed"], _logs(tmp_path)
    assert all(r["participants"] == 3 for r in journal)
    assert all(int(r["bytes_up"]) > 0 and int(r["bytes_down"]) > 0 for r in journal)
    w0, w2 = np.load(model_path(state, 0)), np.load(model_path(state, 2))
    assert not np.allclose(w0, w2), "the global model did not change"
    # Each round reports the loss of its starting model on the devices' data: it fell.
    assert float(journal[1]["mean_loss"]) < float(journal[0]["mean_loss"])
    agg_log = (tmp_path / "logs" / "aggregator.log").read_text()
    assert agg_log.count("dropped a message") >= 3  # the injected garbage, counted and survived


def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit_s: float = 120) -> None:
    """Wait until the aggregator has subscribed and written its first model."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "aggregator did not start"
        time.sleep(0.1)


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                     for p in sorted((root / "logs").glob("*.log")))
