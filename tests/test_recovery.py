"""Faults mid-round on real processes: the aggregator killed, the broker restarted."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from fedtools import logs, stored_updates, wait_retained, wait_until

from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.service import read_journal, state_path
from genofed.cli.demo import spawn, write_configs
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration


def _agent(root: Path, name: str) -> subprocess.Popen[bytes]:
    return spawn(["agent", "run", "--config", str(root / "config" / f"{name}.toml")],
                 root / "logs" / f"{name}.log")


def _aggregator(root: Path, cfg: Path, n: int) -> subprocess.Popen[bytes]:
    return spawn(["aggregator", "run", "--config", str(cfg)], root / "logs" / f"aggregator{n}.log")


def test_aggregator_killed_mid_round_loses_no_acknowledged_update(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    db = state_path(tmp_path / "state" / "aggregator")
    procs: list[subprocess.Popen[bytes]] = []
    (tmp_path / "logs").mkdir()
    with LocalMosquitto(tmp_path / "broker") as broker:
        cfg = write_configs(tmp_path, logreg_bundle, devices, broker.port, rounds=2,
                            min_updates=3)
        try:
            agg = _aggregator(tmp_path, cfg, 1)
            procs.append(agg)
            procs += [_agent(tmp_path, d.name) for d in devices[:2]]
            wait_until("two stored updates", lambda: stored_updates(db, 0) == 2)
            agg.send_signal(signal.SIGKILL)  # no chance to clean up
            agg.wait()
            procs.append(_aggregator(tmp_path, cfg, 2))
            procs.append(_agent(tmp_path, devices[2].name))
            assert procs[-2].wait(timeout=300) == 0, logs(tmp_path)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["round"], r["status"], r["participants"]) for r in journal] == \
        [(0, "completed", 3), (1, "completed", 3)], logs(tmp_path)
    # The two devices answered round 0 once, before the kill; their updates came from the store.
    assert "resumed round 0 with the 2 updates" in (tmp_path / "logs" / "aggregator2.log") \
        .read_text()


def test_broker_restarted_mid_round(tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    db = state_path(tmp_path / "state" / "aggregator")
    procs: list[subprocess.Popen[bytes]] = []
    (tmp_path / "logs").mkdir()
    with LocalMosquitto(tmp_path / "broker") as broker:
        cfg = write_configs(tmp_path, logreg_bundle, devices, broker.port, rounds=2,
                            min_updates=3)
        try:
            procs.append(_aggregator(tmp_path, cfg, 1))
            procs += [_agent(tmp_path, d.name) for d in devices[:2]]
            wait_until("two stored updates", lambda: stored_updates(db, 0) == 2)
            broker.restart()  # same port; retained messages and sessions persist
            wait_retained(broker.port, Topics("demo").task)
            procs.append(_agent(tmp_path, devices[2].name))
            assert procs[0].wait(timeout=300) == 0, logs(tmp_path)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["status"], r["participants"]) for r in journal] == \
        [("completed", 3), ("completed", 3)], logs(tmp_path)
    assert "lost the broker" in (tmp_path / "logs" / "aggregator1.log").read_text()
