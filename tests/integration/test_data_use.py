"""A study's declared data use against each owner's consent, on the real broker.

The aggregator's tasks declare DUO codes HMB and IRB. Three owners consented to them; dev03's
owner consented to general research (GRU) only. dev03 must never join a round: it says why in
its log, sends nothing on its outbox, and the rounds complete with the other three.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fedtools import FOUR, logs, run_four

from genofed.agent import consent
from genofed.aggregator.state import read_journal

pytestmark = pytest.mark.integration


def test_a_task_outside_the_owners_consent_is_never_joined(tmp_path: Path, cohort: Path,
                                                           logreg_bundle: Path) -> None:
    def prepare(cfg: Path) -> None:
        with cfg.open("a") as fh:
            fh.write('\n[study]\nname = "PGS-T2D"\nduo = ["HMB", "IRB"]\n')
        for n in names:
            consent.set_consent(tmp_path / "state" / n, "granted",
                                duo=("GRU",) if n == "dev03" else ("GRU", "HMB", "IRB"))

    names = FOUR
    run_four(tmp_path, cohort, logreg_bundle, prepare)
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
