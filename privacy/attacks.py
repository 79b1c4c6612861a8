"""Membership inference against what the parties of a cross-device federation see.

Members are the genomes a federation trained on; non-members are genomes of the same
populations that it never saw. Every attack is a pure function of (what the party saw, the
target genomes, reference data) and returns one score per target, higher meaning "member", so
that the red team (`genofed redteam`) can rerun them on any federation's outputs.

- `loss_scores`: the loss-threshold attack (Yeom et al. 2018) on a released model: a genome the
  model was trained on tends to have a lower loss under it. Any device or outsider holds every
  released model.
- `case_control_scores`: the aggregate's case-control statistic (Homer et al. 2008,
  Sankararaman et al. 2009). For a logistic model that starts at zero, with server learning
  rate 1, a device's first update is c (y - 1/2) x (its standardized genotype, c the local
  steps times the learning rate), so the round-0 mean update is site by site a case-minus-
  control allele-count difference: a GWAS summary statistic. A member's own genotype is in
  it, so <x, a> (signed by 2y - 1 when the phenotype is known) is larger for members than for
  genomes outside the cohort. The first global model IS this aggregate, so every device holds
  it, not only the aggregator.
- `calibrate`: the statistic standardized per target against its null distribution, the
  target's scores under shadow federations run on non-member cohorts of the same populations
  (the per-target likelihood-ratio test of Sankararaman et al. with a Gaussian null, as LiRA's
  offline variant does). Uncalibrated, a genome with many rare alleles (a large ||x||) scores
  far from 0 whether or not it was a member; calibrated, only its excess over the null counts.

`auc` and `auc_se` are numpy only (DeLong et al. 1988's variance, with its normal interval):
the red team reports them beside every attack, and `gdp_auc_ceiling` beside the epsilon: the
highest AUC that the noise a round carries lets any attack reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Logits = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (flat model, x [n, d]) -> logits [n]


def logreg_logits(model: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Logits of genofed's logistic regression (layout: weights [1, d], then the bias)."""
    m = np.asarray(model, np.float64)
    return np.asarray(x, np.float64) @ m[:-1] + m[-1]


def bce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each (logit, label), computed stably."""
    z = np.asarray(logits, np.float64)
    return np.maximum(z, 0) - z * np.asarray(y, np.float64) + np.log1p(np.exp(-np.abs(z)))


def loss_scores(model: np.ndarray, x: np.ndarray, y: np.ndarray,
                logits: Logits = logreg_logits) -> np.ndarray:
    """The loss-threshold attack on one released model: -loss of each target genome."""
    return -bce(logits(model, x), y)


def case_control_scores(aggregate: np.ndarray, x: np.ndarray,
                        y: np.ndarray | None = None) -> np.ndarray:
    """The round-0 aggregate's case-control statistic of each target: <x, a> times (2y - 1)
    with the phenotype known, |<x, a>| without. `aggregate` is the decoded mean update (or the
    first global model) in the logistic layout; its bias is left out. `x` is the targets'
    genotypes centred and scaled by the reference frequencies (`agent/encode.py`)."""
    a = np.asarray(aggregate, np.float64)[:-1]
    s = np.asarray(x, np.float64) @ a
    return np.abs(s) if y is None else s * (2.0 * np.asarray(y, np.float64) - 1.0)


def calibrate(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Each target's score as a z-score against its null: `null` [shadows, targets] holds the
    same statistic of the same targets under shadow federations none of them was in."""
    s = np.asarray(scores, np.float64)
    n = np.asarray(null, np.float64)
    if n.ndim != 2 or n.shape[1] != s.shape[0] or n.shape[0] < 2:
        raise ValueError(f"null of shape {n.shape} for {s.shape[0]} targets: want at least 2 "
                         "shadow federations by targets")
    sd = n.std(axis=0, ddof=1)
    return (s - n.mean(axis=0)) / np.where(sd > 0, sd, np.inf)


def _midranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of v, ties given their mean rank."""
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    first = np.r_[True, sv[1:] != sv[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], sv.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(v.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(score of a member > score of a non-member) + P(tie) / 2 (the Mann-Whitney AUC)."""
    m, n = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    r = _midranks(np.concatenate([m, n]))
    return float((r[:m.size].sum() - m.size * (m.size + 1) / 2) / (m.size * n.size))


def auc_se(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, float]:
    """The AUC and DeLong's standard error of it."""
    m, n = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    if m.size < 2 or n.size < 2:
        raise ValueError("an AUC's error needs at least two members and two non-members")
    both = _midranks(np.concatenate([m, n]))
    # Placement values: the share of the other group each score beats (ties count 1/2).
    v10 = (both[:m.size] - _midranks(m)) / n.size
    v01 = 1.0 - (both[m.size:] - _midranks(n)) / m.size
    return auc(m, n), math.sqrt(v10.var(ddof=1) / m.size + v01.var(ddof=1) / n.size)


def normal_ci(estimate: float, se: float, level: float = 0.95) -> tuple[float, float]:
    """estimate -+ z se, clipped to [0, 1]."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return max(0.0, estimate - z * se), min(1.0, estimate + z * se)


def auc_ci(members: np.ndarray, nonmembers: np.ndarray,
           level: float = 0.95) -> tuple[float, float]:
    """DeLong's normal confidence interval of the AUC, clipped to [0, 1]."""
    return normal_ci(*auc_se(members, nonmembers), level)


def gdp_auc_ceiling(mu: float) -> float:
    """The largest AUC any membership test can reach against a mu-GDP mechanism (Dong, Roth,
    Su 2022): its trade-off curve is that of N(0, 1) against N(mu, 1), AUC = Phi(mu / sqrt 2).
    Skellam noise of large variance is Gaussian to within the sampler's total variation, so
    this is the ceiling of a Skellam round at mu = sensitivity / noise sd (composed over k
    rounds: sqrt(k) times that)."""
    return NormalDist().cdf(mu / math.sqrt(2))


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """The share of members scoring above the threshold that at most `fpr` of non-members pass."""
    n = np.sort(np.asarray(nonmembers, np.float64))
    k = math.floor(fpr * n.size)  # at most k non-members may pass
    threshold = n[n.size - k - 1] if k < n.size else -np.inf
    return float(np.mean(np.asarray(members, np.float64) > threshold))


@dataclass(frozen=True)
class AttackResult:
    """One attack's AUC over members against non-members, its standard error and 95% CI,
    and its TPR at 1% FPR."""

    name: str
    auc: float
    se: float
    tpr_at_1pct_fpr: float
    members: int
    nonmembers: int

    @property
    def ci(self) -> tuple[float, float]:
        return normal_ci(self.auc, self.se)

    @staticmethod
    def of(name: str, members: np.ndarray, nonmembers: np.ndarray) -> AttackResult:
        a, se = auc_se(members, nonmembers)
        return AttackResult(name, a, se, tpr_at_fpr(members, nonmembers, 0.01), len(members),
                            len(nonmembers))

    @staticmethod
    def pooled(results: Sequence[AttackResult]) -> AttackResult:
        """The same attack on independent federations: the mean of their AUCs (each attacker
        ranks the targets of one federation, whose scores are not comparable with another's)
        and of their TPRs, with the standard error of a mean of independent estimates."""
        k = len(results)
        return AttackResult(results[0].name, float(np.mean([r.auc for r in results])),
                            math.sqrt(sum(r.se ** 2 for r in results)) / k,
                            float(np.mean([r.tpr_at_1pct_fpr for r in results])),
                            sum(r.members for r in results), sum(r.nonmembers for r in results))

    def row(self) -> dict[str, object]:
        lo, hi = self.ci
        return {"attack": self.name, "auc": self.auc, "auc_ci_lo": lo, "auc_ci_hi": hi,
                "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr, "members": self.members,
                "nonmembers": self.nonmembers}


def loss_attack(models: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray,
                member: np.ndarray, logits: Logits = logreg_logits) -> dict[str, AttackResult]:
    """The loss threshold on every released model (`models[r]`: the model after round r).
    Returns the last model's result and the best round's: the best is chosen on the targets
    themselves, an upper bound on what an attacker who must pick the round beforehand gets."""
    member = np.asarray(member, bool)
    per = [AttackResult.of(f"loss_round{r}", s[member], s[~member])
           for r, s in enumerate(loss_scores(m, x, y, logits) for m in models)]
    best = max(per, key=lambda a: a.auc)
    return {"loss_last": _renamed(per[-1], "loss_last"),
            "loss_best_round": _renamed(best, "loss_best_round")}


def aggregate_attack(aggregate: np.ndarray, shadow_aggregates: Sequence[np.ndarray],
                     x: np.ndarray, y: np.ndarray, member: np.ndarray
                     ) -> dict[str, AttackResult]:
    """The round-0 case-control statistic, phenotype known: uncalibrated, and calibrated on the
    shadow federations' aggregates (none of which holds any target); and calibrated without
    the phenotype."""
    member = np.asarray(member, bool)
    out = {}
    for name, yy in (("case_control", y), ("case_control_no_phenotype", None)):
        raw = case_control_scores(aggregate, x, yy)
        null = np.stack([case_control_scores(a, x, yy) for a in shadow_aggregates])
        z = calibrate(raw, null)
        out[f"{name}_calibrated"] = AttackResult.of(f"{name}_calibrated", z[member],
                                                    z[~member])
        if yy is not None:
            out[name] = AttackResult.of(name, raw[member], raw[~member])
    return out


def _renamed(a: AttackResult, name: str) -> AttackResult:
    return AttackResult(name, a.auc, a.se, a.tpr_at_1pct_fpr, a.members, a.nonmembers)
