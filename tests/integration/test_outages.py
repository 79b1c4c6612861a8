"""The broker goes away mid-round, again and again: nobody exits, every round ends cleanly.

Eight outages of the real Mosquitto, some a clean stop and some a kill (SIGKILL, as a power
cut), seven of 1 to 4 s and one of 30 s, while three agents and the aggregator run rounds. A
fourth enrolled device, `ghost`, says it is online and never answers, so each round waits
for it until its first deadline and the outages fall inside rounds; some outlast a stage's
deadline, so that round aborts, and a new one opens. Every process must still be running
after each outage, and the federation must finish its rounds. (An outage of any length is
the same case: each side waits on its connection, saying why every 30 s.)
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest
from support import faulty_agent
from support.fedtools import all_exit_cleanly, enroll_ghost, ghost, logs, stop_all, wait_until

from genofed.aggregator.state import read_journal
from genofed.cli.demo import spawn, start_broker, write_configs

pytestmark = pytest.mark.integration


def test_eight_broker_outages_mid_round(tmp_path: Path, cohort: Path,
                                         logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [d.name for d in dirs]
    (tmp_path / "logs").mkdir()
    broker = start_broker(tmp_path, [*names, "ghost"])
    procs: list[subprocess.Popen[bytes]] = []
    rng = random.Random(8)
    state = tmp_path / "state" / "aggregator"
    try:
        cfg = write_configs(tmp_path, logreg_bundle, dirs, broker.port, rounds=4,
                            min_participants=3, stage_timeout_s=5.0)
        enroll_ghost(tmp_path)
        ghost(tmp_path, broker.port, "online")
        procs += [faulty_agent.spawn(tmp_path / "config" / f"{n}.toml",
                                     tmp_path / "logs" / f"{n}.log") for n in names]
        procs.append(spawn(["aggregator", "run", "--config", str(cfg)],
                           tmp_path / "logs" / "aggregator.log"))
        agg_log = tmp_path / "logs" / "aggregator.log"
        wait_until("round 0 open", lambda: "round 0 open" in agg_log.read_text())
        for outage in range(8):
            time.sleep(rng.uniform(0.3, 2.0))  # somewhere in a round
            if outage % 2:
                assert broker.proc is not None
                broker.proc.kill()  # a power cut: nothing saved on the way down
                broker.proc.wait()
            broker.stop()
            time.sleep(30.0 if outage == 5 else rng.uniform(1.0, 4.0))  # one long outage
            broker.start()
            alive = [p.poll() is None for p in procs]
            assert all(alive) or procs[-1].poll() == 0, (outage, alive, logs(tmp_path))
        all_exit_cleanly(tmp_path, procs[-1], procs[:-1], timeout_s=300)
    finally:
        stop_all(procs, broker)
    journal = read_journal(state)
    assert [r["status"] for r in journal].count("completed") == 4, logs(tmp_path)
    assert {r["status"] for r in journal} <= {"completed", "aborted"}
    assert all(r["participants"] == 3 for r in journal if r["status"] == "completed")
    text = agg_log.read_text()
    assert text.count("lost the broker") >= 4 and "Traceback" not in text
