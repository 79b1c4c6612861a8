"""A study's declared data use against each owner's consent, on the real broker.

The aggregator's tasks declare DUO codes HMB and IRB. Three owners consented to them; dev03's
owner consented to general research (GRU) only. dev03 must never join a round: it says why in
its log, sends nothing on its outbox, and the rounds complete with the other three.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.fedtools import all_exit_cleanly, logs, stop_all

from genofed.agent import consent
from genofed.aggregator.state import read_journal
from genofed.cli.demo import spawn_federation, start_broker, write_configs

pytestmark = pytest.mark.integration


def test_a_task_outside_the_owners_consent_is_never_joined(tmp_path: Path, cohort: Path,
                                                           logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(4)]
    broker = start_broker(tmp_path, names)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(tmp_path, logreg_bundle, [dirs[i % 3] for i in range(4)],
                            broker.port, rounds=2, min_participants=3, names=names,
                            stage_timeout_s=5.0)
        with cfg.open("a") as fh:
            fh.write('\n[study]\nname = "PGS-T2D"\nduo = ["HMB", "IRB"]\n')
        for n in names:
            consent.set_consent(tmp_path / "state" / n, "granted",
                                duo=("GRU",) if n == "dev03" else ("GRU", "HMB", "IRB"))
        procs = spawn_federation(tmp_path, cfg, names)
        all_exit_cleanly(tmp_path, procs[0], procs[1:])
    finally:
        stop_all(procs, broker)
    journal = read_journal(tmp_path / "state" / "aggregator")
    completed = [r for r in journal if r["status"] == "completed"]
    assert len(completed) == 2, logs(tmp_path)
    assert all("dev03" not in r["devices"] for r in journal)
    assert all(r["devices"] == names[:3] for r in completed)
    text = (tmp_path / "logs" / "dev03.log").read_text()
    assert "not joining: study 'PGS-T2D' declares data use HMB, IRB; your consent covers GRU " \
           "(not HMB, IRB)" in text, text
    entries, problems = consent.verify(tmp_path / "state" / "dev03")
    assert problems == [] and [e["kind"] for e in entries] == ["consent"]  # nothing sent
