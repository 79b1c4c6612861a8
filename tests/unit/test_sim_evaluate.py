"""AUC by ancestry: per-ancestry AUCs against scikit-learn, the best and worst named, the gap,
and ancestries too small to rank left out by name."""

from __future__ import annotations

import numpy as np
import pytest

from genofed.errors import GenofedError
from genofed.sim.evaluate import auc_report, describe, read_ancestry


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
