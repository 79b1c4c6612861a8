"""AUC by ancestry: per-ancestry AUCs against scikit-learn, the best and worst named, the gap,
and ancestries too small to rank left out by name."""

from __future__ import annotations

import numpy as np
import pytest

from genofed.errors import GenofedError
from genofed.sim.evaluate import auc_report, describe, gap_closure, read_ancestry


def test_auc_by_ancestry_names_the_gap() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    n = 600
    anc = np.array(["AFR", "EUR", "EAS"])[np.arange(n) % 3]
    y = rng.integers(0, 2, n)
    noise = {"AFR": 3.0, "EUR": 0.3, "EAS": 1.0}  # EUR served best, AFR worst
    score = y + rng.normal(size=n) * np.array([noise[a] for a in anc])
    anc = np.concatenate([anc, ["AMR"] * 4])  # four genomes: too few cases to rank
    y = np.concatenate([y, [1, 0, 0, 0]])
    score = np.concatenate([score, [0.0, 1.0, 2.0, 3.0]])
    r = auc_report(y, score, anc)
    by = r["by_ancestry"]
    assert isinstance(by, dict) and sorted(by) == ["AFR", "EAS", "EUR"]
    for a in by:
        m = anc == a
        assert by[a] == pytest.approx(metrics.roc_auc_score(y[m], score[m]))
    assert r["auc"] == pytest.approx(metrics.roc_auc_score(y, score))
    assert (r["best"], r["worst"]) == ("EUR", "AFR") and r["skipped"] == ["AMR"]
    assert r["gap"] == pytest.approx(by["EUR"] - by["AFR"])
    assert "best EUR, worst AFR: gap" in describe(r)


def test_bad_ancestry_file(tmp_path: pytest.TempPathFactory) -> None:
    p = tmp_path / "ancestry.tsv"  # type: ignore[operator]
    p.write_text("sample\tpop\ns1\tEUR\n")
    with pytest.raises(GenofedError, match=r"ancestry.tsv:1: ancestry file must start"):
        read_ancestry(p)


def test_gap_closure_reads_both_ways() -> None:
    """Worked by hand: the EUR-only model serves AFR at 0.60 (its worst) against 0.80 on EUR;
    centralized 0.76 on AFR; federated 0.72. Spread: 1 - (0.80 - 0.72) / 0.20 = 0.6, the
    centralized 1 - 0.06 / 0.20 = 0.7; shortfall on AFR: (0.72 - 0.60) / (0.76 - 0.60) = 0.75."""
    def rep(afr: float, eur: float) -> dict[str, object]:
        best, worst = ("EUR", "AFR") if eur >= afr else ("AFR", "EUR")
        return {"by_ancestry": {"AFR": afr, "EUR": eur}, "best": best, "worst": worst,
                "gap": abs(eur - afr)}

    c = gap_closure(rep(0.72, 0.80), rep(0.76, 0.82), rep(0.60, 0.80))
    assert c["worst_of_single"] == "AFR"
    assert c["spread"] == pytest.approx(0.6)
    assert c["spread_centralized"] == pytest.approx(0.7)
    assert c["shortfall"] == pytest.approx(0.75)
