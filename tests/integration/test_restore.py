"""The aggregator's state restored from an older backup: the devices follow it back.

Round numbers and model versions go back when an operator restores the aggregator's SQLite
file from a backup. The devices, still running, have seen later ones: they must not ignore
the aggregator for good (they did: every task looked stale, every device went silent and was
rested), nor take a copy of an old message redelivered after a reconnection for a new one.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from support import faulty_agent
from support.fedtools import exit_status, logs, stop_all, wait_until

from genofed.aggregator.state import read_journal, state_path
from genofed.cli.demo import spawn, start_broker, write_configs

pytestmark = pytest.mark.integration


def _completed(state: Path) -> int:
    return sum(r["status"] == "completed" for r in read_journal(state))


def test_devices_follow_an_aggregator_restored_from_a_backup(tmp_path: Path, cohort: Path,
                                                              logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [d.name for d in dirs]
    (tmp_path / "logs").mkdir()
    broker = start_broker(tmp_path, names)
    state = tmp_path / "state" / "aggregator"
    backup = tmp_path / "backup.db"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(tmp_path, logreg_bundle, dirs, broker.port, rounds=100,
                            min_participants=3)
        procs += [faulty_agent.spawn(tmp_path / "config" / f"{n}.toml",
                                     tmp_path / "logs" / f"{n}.log") for n in names]
        first = spawn(["aggregator", "run", "--config", str(cfg)],
                      tmp_path / "logs" / "aggregator1.log")
        procs.append(first)
        wait_until("two rounds", lambda: _completed(state) >= 2)
        with sqlite3.connect(state_path(state)) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)  # a consistent copy of the running service's state
        wait_until("two rounds more", lambda: _completed(state) >= 4)
        first.send_signal(signal.SIGTERM)
        assert exit_status(first, tmp_path, 60) == 0, logs(tmp_path)
        with sqlite3.connect(backup) as db:
            restored_rounds = db.execute("SELECT COUNT(*) FROM rounds WHERE status='completed'"
                                         ).fetchone()[0]
        ahead = _completed(state)
        assert ahead >= restored_rounds + 2
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state_path(state)}{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, state_path(state))  # the operator restores the backup
        cfg.write_text(cfg.read_text().replace("rounds = 100", f"rounds = {ahead + 1}"))
        procs.append(spawn(["aggregator", "run", "--config", str(cfg)],
                           tmp_path / "logs" / "aggregator2.log"))
        assert exit_status(procs[-1], tmp_path, 300) == 0, logs(tmp_path)
        for p in procs[:-2]:
            assert exit_status(p, tmp_path, 60) == 0, logs(tmp_path)
    finally:
        stop_all(procs, broker)
    journal = read_journal(state)
    assert [r["round"] for r in journal][:restored_rounds] == list(range(restored_rounds))
    assert _completed(state) == ahead + 1
    # A round the backup caught in flight is resumed, and the devices that had joined it sit
    # it out (their keys for it are gone): it aborts; every other round completes with all.
    aborted = [r for r in journal if r["status"] != "completed"]
    assert len(aborted) <= 1 and all(r["round"] == restored_rounds for r in aborted)
    assert all(r["participants"] == 3 for r in journal if r["status"] == "completed")
    device_log = (tmp_path / "logs" / f"{names[0]}.log").read_text()
    assert "the aggregator went back from round" in device_log
