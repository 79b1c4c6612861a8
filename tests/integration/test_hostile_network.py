"""A bad device and a hostile network on the real broker: nothing ends a process.

One device sends an unmasking share off by one (properly signed), so a round's sum cannot be
unmasked; its certificate, and one the aggregator never enrolled, put a deeply nested status
on their own retained status topics (it used to raise RecursionError in the aggregator at
every restart); random bytes go to every topic the ACL lets a device write. The aggregator
must journal the bad round aborted with its reason and go on; every process stays up.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import faulty_agent
from support.fedtools import all_exit_cleanly, codec_atol, logs, mosquitto_pub, stop_all, wait_until

from genofed.aggregator.state import read_journal, read_model
from genofed.cli.demo import spawn, start_broker, write_configs
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration
BOMB = b'{"state": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_bad_share_status_bomb_and_noise_end_no_process(tmp_path: Path, cohort: Path,
                                                        logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(4)]
    topics = Topics("demo")
    (tmp_path / "logs").mkdir()
    broker = start_broker(tmp_path, [*names, "stranger"])  # stranger: never enrolled
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(tmp_path, logreg_bundle, [dirs[i % 3] for i in range(4)],
                            broker.port, rounds=2, min_participants=4, names=names)
        for who in ("dev01", "stranger"):  # retained before the aggregator ever starts
            mosquitto_pub(tmp_path, broker.port, who, topics.status(who), BOMB, retain=True)
        agg = spawn(["aggregator", "run", "--config", str(cfg)],
                    tmp_path / "logs" / "aggregator.log")
        agg_log = tmp_path / "logs" / "aggregator.log"
        # The bombs are read before dev01's agent replaces its retained status with its own.
        wait_until("dev01's bomb dropped", lambda: "dropped a bad status message of dev01"
                   in agg_log.read_text())
        # dev00 holds the first share of every neighbour it has: the server uses it.
        procs += [faulty_agent.spawn(tmp_path / "config" / f"{n}.toml",
                                     tmp_path / "logs" / f"{n}.log", dump_deltas=True,
                                     corrupt_share=0 if n == "dev00" else None) for n in names]
        procs.append(agg)
        wait_until("round 0 open", lambda: "round 0 open" in agg_log.read_text())
        rng = os.urandom
        # Noise on every topic a device certificate may write (one without an agent running:
        # the broker allows one connection per identity).
        for i in range(40):
            topic = topics.outbox("stranger") if i % 2 else topics.status("stranger")
            mosquitto_pub(tmp_path, broker.port, "stranger", topic, rng(1 + i * 37 % 900))
        all_exit_cleanly(tmp_path, procs[-1], procs[:-1], timeout_s=300)
    finally:
        stop_all(procs, broker)
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [r["status"] for r in journal].count("completed") == 2, logs(tmp_path)
    bad = next(r for r in journal if r["round"] == 0)
    # The off-by-one share is caught: the round aborts with its reason, or, had it completed,
    # its model would have to be the plain mean: never a wrong model, never an exit.
    if bad["status"] == "completed":
        state = tmp_path / "state" / "aggregator"
        ups = [np.load(tmp_path / "state" / n / "delta-0.npz")["delta"] for n in bad["devices"]]
        got = read_model(state, 1).astype(np.float64) - read_model(state, 0)
        np.testing.assert_allclose(got, np.mean(ups, axis=0), atol=codec_atol(len(ups)))
    else:
        assert "round 0" in bad["reason"], bad["reason"]
    text = agg_log.read_text()
    assert "Traceback" not in text and "dropped a bad status message of dev01" in text
