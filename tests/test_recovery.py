"""Faults mid-round on real processes: the aggregator killed, the broker restarted.

A fourth enrolled device, `ghost`, says it is online and never answers: every round waits for
it until the stage deadline, which gives the test a window in which a round is surely in
flight (its three advertisements stored) to break something in.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fedtools import enroll_ghost, ghost, logs, stored_messages, wait_until

from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.service import read_journal, state_path
from genofed.cli.demo import spawn, start_broker, write_configs

pytestmark = pytest.mark.integration
STAGE_TIMEOUT_S = 4.0


def _agent(root: Path, name: str) -> subprocess.Popen[bytes]:
    return spawn(["agent", "run", "--config", str(root / "config" / f"{name}.toml")],
                 root / "logs" / f"{name}.log")


def _aggregator(root: Path, cfg: Path, n: int) -> subprocess.Popen[bytes]:
    return spawn(["aggregator", "run", "--config", str(cfg)], root / "logs" / f"aggregator{n}.log")


@dataclass
class Fleet:
    """Broker, configs and the three agents, with a round in flight (its adverts stored)."""

    broker: LocalMosquitto
    config: Path
    db: Path
    procs: list[subprocess.Popen[bytes]]


@contextmanager
def fleet_mid_round(root: Path, cohort: Path, bundle: Path) -> Iterator[Fleet]:
    """Start everything, wait until round 0 is surely in flight; kill it all at the end."""
    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    (root / "logs").mkdir()
    db = state_path(root / "state" / "aggregator")
    broker = start_broker(root, [d.name for d in devices] + ["ghost"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(root, bundle, devices, broker.port, rounds=2,
                            min_participants=3, stage_timeout_s=STAGE_TIMEOUT_S)
        enroll_ghost(root)
        ghost(root, broker.port, "online")
        procs += [_agent(root, d.name) for d in devices]
        procs.append(_aggregator(root, cfg, 1))
        wait_until("round 0's advertisements",
                   lambda: stored_messages(db, 0, "ADVERTISE_KEYS") == 3)
        yield Fleet(broker, cfg, db, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.stop()


def test_aggregator_killed_mid_round_aborts_it_then_completes(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    with fleet_mid_round(tmp_path, cohort, logreg_bundle) as f:
        agg = f.procs[-1]
        agg.send_signal(signal.SIGKILL)  # no chance to clean up
        agg.wait()
        ghost(tmp_path, f.broker.port, "offline")
        f.procs.append(_aggregator(tmp_path, f.config, 2))
        assert f.procs[-1].wait(timeout=300) == 0, logs(tmp_path)
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["round"], r["status"], r["participants"]) for r in journal] == \
        [(0, "aborted", 0), (1, "completed", 3), (2, "completed", 3)], logs(tmp_path)
    assert journal[0]["reason"] == "aggregator restarted"


def test_broker_restarted_mid_round(tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    with fleet_mid_round(tmp_path, cohort, logreg_bundle) as f:
        f.broker.restart()  # same port; retained messages and sessions persist
        ghost(tmp_path, f.broker.port, "offline")
        assert f.procs[-1].wait(timeout=300) == 0, logs(tmp_path)
    journal = read_journal(tmp_path / "state" / "aggregator")
    statuses = [r["status"] for r in journal]
    # A completed round, or a clean abort followed by a completed one; never a lost model.
    assert statuses.count("completed") == 2 and statuses[-1] == "completed", logs(tmp_path)
    assert all(r["participants"] == 3 for r in journal if r["status"] == "completed")
    assert "lost the broker" in (tmp_path / "logs" / "aggregator1.log").read_text()
