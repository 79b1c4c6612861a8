"""AUC overall and by ancestry, with the gap between the best- and worst-served ancestry.

Every AUC the project reports on a simulated cohort goes through `auc_report`, so that a model
that serves one ancestry well and another badly cannot hide behind its overall figure.
Ancestries with fewer than MIN_CASES cases or controls in the test set get no AUC (too noisy
to rank) and are listed as skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genofed.errors import LocalInputError, read_user_text

MIN_CASES = 5


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def central_scores(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, *,
                   cv_rows: np.ndarray | None = None) -> np.ndarray:
    """Test scores of the centralized baseline: scikit-learn's L2 logistic regression on the
    pooled data, its penalty chosen by 3-fold cross-validated AUC (unpenalized, 500 sites on
    1,200 genomes overfit: test AUC 0.647 against 0.782 federated on the demo's cohort).
    `cv_rows`: choose the penalty on these rows only, then fit on all (cross-validation at
    10^5 genomes x 2,000 sites takes most of an hour)."""
    import warnings

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    with warnings.catch_warnings():  # scikit-learn 1.9 warns of 1.10's defaults at every fit
        warnings.simplefilter("ignore", FutureWarning)
        rows = slice(None) if cv_rows is None else cv_rows
        clf = LogisticRegressionCV(Cs=np.logspace(-4, 0, 9), cv=3, scoring="roc_auc",
                                   max_iter=2000).fit(x[rows], y[rows])
        if cv_rows is not None:  # refit on all rows at the penalty chosen on cv_rows
            clf = LogisticRegression(C=float(clf.C_[0]), max_iter=2000).fit(x, y)
    return np.asarray(clf.decision_function(test_x))


def auc_report(y: np.ndarray, score: np.ndarray, ancestry: np.ndarray) -> dict[str, object]:
    """{"auc", "by_ancestry": {name: auc}, "best", "worst", "gap", "skipped"}."""
    y = np.asarray(y)
    score = np.asarray(score)
    ancestry = np.asarray(ancestry)
    by: dict[str, float] = {}
    skipped = []
    for name in sorted(set(ancestry.tolist())):
        m = ancestry == name
        cases = int(y[m].sum())
        if min(cases, int(m.sum()) - cases) < MIN_CASES:
            skipped.append(name)
            continue
        by[name] = auc(y[m], score[m])
    best = max(by, key=by.__getitem__) if by else None
    worst = min(by, key=by.__getitem__) if by else None
    gap = by[best] - by[worst] if best and worst else float("nan")
    return {"auc": auc(y, score), "by_ancestry": by, "best": best, "worst": worst, "gap": gap,
            "skipped": skipped}


def gap_closure(federated: dict[str, object], centralized: dict[str, object],
                single: dict[str, object]) -> dict[str, float | str]:
    """How much of a single-ancestry model's disadvantage the federated model closes, read two
    ways (each argument an `auc_report`):
    - `spread`: 1 - (federated's best-worst gap) / (single's best-worst gap). Ancestries differ
      in how predictable the trait is from the panel whatever the training data, so even the
      centralized model keeps a gap: its own closure (`spread_centralized`) is the reference.
    - `shortfall`: on the single model's worst-served ancestry W, the share of its shortfall
      against the centralized model that federating recovers, (fed[W] - single[W]) /
      (central[W] - single[W]): the portability loss of training on one ancestry."""
    def by(r: dict[str, object]) -> dict[str, float]:
        b = r["by_ancestry"]
        assert isinstance(b, dict)
        return b

    def gap(r: dict[str, object]) -> float:
        g = r["gap"]
        assert isinstance(g, float)
        return g

    nan = float("nan")
    g1, w = gap(single), str(single["worst"])
    lost = by(centralized)[w] - by(single)[w]
    return {"spread": 1 - gap(federated) / g1 if g1 > 0 else nan,
            "spread_centralized": 1 - gap(centralized) / g1 if g1 > 0 else nan,
            "worst_of_single": w,
            "shortfall": (by(federated)[w] - by(single)[w]) / lost if lost > 0 else nan}


def describe(report: dict[str, object]) -> str:
    """One line: overall, each ancestry, and the named gap."""
    by = report["by_ancestry"]
    assert isinstance(by, dict)
    parts = "  ".join(f"{k} {v:.3f}" for k, v in by.items())
    gap = report["gap"]
    assert isinstance(gap, float)
    return (f"AUC {report['auc']:.3f}  [{parts}]  best {report['best']}, worst "
            f"{report['worst']}: gap {gap:.3f}")


def read_ancestry(path: str | Path) -> dict[str, str]:
    """`sample<TAB>ancestry` as `genofed simulate` writes it."""
    p = Path(path)
    lines = read_user_text(p, "ancestry file").splitlines()
    if not lines or lines[0].split("\t") != ["sample", "ancestry"]:
        raise LocalInputError(f"{p}:1: ancestry file must start with 'sample<TAB>ancestry'")
    out = {}
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0]:
            raise LocalInputError(f"{p}:{lineno}: expected sample<TAB>ancestry")
        out[fields[0]] = fields[1]
    return out
