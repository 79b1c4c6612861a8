"""Differential privacy rounds on the real broker: the noise, the two ledgers, the caps.

The aggregator runs `[privacy] epsilon = 3` over two rounds, per device (Skellam noise inside
secure aggregation) or per record (DP-SGD on each device). dev00-dev02's owners capped their
epsilon well above that; dev03's owner capped it below one round's cost. Each round
completes with the three, the aggregator's ledger (in its journal) and each device's own
ledger (in its audit chain) agree on the epsilon spent, and dev03 sits every round out,
says why, and sends nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fedtools import FOUR, logs, run_four

from genofed.agent import consent, ledger
from genofed.aggregator.state import read_journal

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("unit", ["device", "record"])
def test_dp_rounds_complete_and_the_ledgers_agree(tmp_path: Path, cohort: Path,
                                                  logreg_bundle: Path, unit: str) -> None:
    def prepare(cfg: Path) -> None:
        with cfg.open("a") as fh:
            fh.write('\n[study]\nname = "PGS-T2D"\n')
        for n in names:
            consent.set_consent(tmp_path / "state" / n, "granted",
                                epsilon_cap=0.01 if n == "dev03" else 10.0)

    names = FOUR
    run_four(tmp_path, cohort, logreg_bundle, prepare, dp_epsilon=3.0, dp_unit=unit)
    journal = read_journal(tmp_path / "state" / "aggregator")
    completed = [r for r in journal if r["status"] == "completed"]
    assert len(completed) == 2, logs(tmp_path)
    assert all(r["devices"] == names[:3] for r in completed)
    spent = [r["privacy"] for r in completed]
    assert all(p is not None for p in spent), journal
    final = spent[-1]["epsilon"]
    assert 0.99 * 3.0 <= final <= 3.0 and spent[0]["epsilon"] < final
    for n in names[:3]:
        mine = ledger.spent(tmp_path / "state" / n)
        assert mine.rounds == 2
        assert mine.epsilon(1e-5, unit=unit) == pytest.approx(final, rel=1e-9), n
        entries = [e for e in consent.verify(tmp_path / "state" / n)[0]
                   if e["kind"] == "contribution"]
        assert [e["epsilon"] for e in entries] == pytest.approx(
            [p["epsilon_round"] for p in spent], rel=1e-5)
    text = (tmp_path / "logs" / "dev03.log").read_text()
    whose = "this device's" if unit == "device" else "each of its records'"
    assert f"not joining: round 0 would bring {whose} epsilon in total to" in text, text
    assert "past your cap of 0.01" in text
    entries, problems = consent.verify(tmp_path / "state" / "dev03")
    assert problems == [] and [e["kind"] for e in entries] == ["consent"]  # nothing sent
    assert "epsilon" in (tmp_path / "logs" / "aggregator.log").read_text()
