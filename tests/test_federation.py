"""Real parts end to end: Mosquitto, the aggregator and three agent processes, two rounds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from fedtools import inject, logs, wait_retained

from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.service import read_journal, read_model
from genofed.cli.demo import spawn, write_configs
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration


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
            wait_retained(broker.port, Topics("demo").task)  # the aggregator has subscribed
            inject(broker.port, Topics("demo").outbox(devices[0].name),
                    [b"garbage", b"GFD1\x00\x00\x00\x02{}", b""])
            for d in devices:
                procs.append(spawn(["agent", "run", "--config",
                                    str(tmp_path / "config" / f"{d.name}.toml")],
                                   tmp_path / "logs" / f"{d.name}.log"))
            assert procs[0].wait(timeout=300) == 0, logs(tmp_path)
            for p in procs[1:]:
                assert p.wait(timeout=60) == 0, logs(tmp_path)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()

    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state)
    assert [r["status"] for r in journal] == ["completed", "completed"], logs(tmp_path)
    assert all(r["participants"] == 3 for r in journal)
    assert all(int(r["bytes_up"]) > 0 and int(r["bytes_down"]) > 0 for r in journal)
    w0, w2 = read_model(state, 0), read_model(state, 2)
    assert not np.allclose(w0, w2), "the global model did not change"
    # Each round reports the loss of its starting model on the devices' data: it fell.
    assert float(journal[1]["mean_loss"]) < float(journal[0]["mean_loss"])
    agg_log = (tmp_path / "logs" / "aggregator.log").read_text()
    assert agg_log.count("dropped a message") >= 3  # the injected garbage, counted and survived


