"""The aggregator's disk fills up mid-round, on the real broker with real processes.

The state database lives on a small tmpfs that is filled to the last byte once round 1 opens.
The aggregator must say so in one line and wait (it takes nothing more from the broker, which
keeps every message it has not acknowledged), every process stays up, and when space is
freed the federation goes on: rounds complete, and each one is journaled whole.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.disk import fill, tiny_tmpfs
from support.fedtools import all_exit_cleanly, logs, stop_all, wait_until

from genofed.aggregator.state import read_journal, read_model
from genofed.cli.demo import spawn_federation, start_broker, write_configs

pytestmark = pytest.mark.integration


def test_a_full_disk_is_waited_out_and_the_rounds_go_on(tmp_path: Path, cohort: Path,
                                                         logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(4)]
    procs: list[subprocess.Popen[bytes]] = []
    with tiny_tmpfs(tmp_path / "state" / "aggregator", "4m") as disk:
        broker = start_broker(tmp_path, names)
        try:
            cfg = write_configs(tmp_path, logreg_bundle, [dirs[i % 3] for i in range(4)],
                                broker.port, rounds=3, min_participants=4, names=names)
            procs = spawn_federation(tmp_path, cfg, names)
            agg_log = tmp_path / "logs" / "aggregator.log"
            wait_until("round 1 open", lambda: "round 1 open" in agg_log.read_text())
            fill(disk / "filler")
            wait_until("the aggregator to say its disk is full",
                       lambda: "a full disk? free space" in agg_log.read_text())
            time.sleep(3)  # it waits: no process exits meanwhile
            assert [p.poll() for p in procs] == [None] * len(procs), logs(tmp_path)
            (disk / "filler").unlink()  # the operator frees space
            all_exit_cleanly(tmp_path, procs[0], procs[1:])
        finally:
            stop_all(procs, broker)
        journal = read_journal(disk)
        completed = sum(r["status"] == "completed" for r in journal)
        versions = [read_model(disk, v) for v in range(completed + 1)]  # one per completion
    assert [r["round"] for r in journal] == [0, 1, 2], logs(tmp_path)
    assert journal[0]["status"] == "completed" and journal[2]["status"] == "completed"
    for r in journal:  # the round caught by the full disk completes, or aborts saying why
        assert r["status"] == "completed" or r["reason"], r
    text = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "Traceback" not in text
    assert all(np.all(np.isfinite(v)) for v in versions)
    assert not any(np.array_equal(a, b) for a, b in itertools.pairwise(versions))
