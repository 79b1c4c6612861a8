"""The best any membership-inference attack can do against an (epsilon, delta)-DP federation.

A membership test is a hypothesis test between "the target's data was in" and "it was not",
seen through the mechanism's output. Its operating point is (FPR a, TPR b). If the mechanism
M is (eps, delta)-DP for neighbouring inputs D (with the target) and D' (without), then for the
test's rejection region S:  b = P[M(D) in S] <= e^eps P[M(D') in S] + delta = e^eps a + delta,
and, applied to the complement of S with the roles of D and D' swapped,
1 - a = P[M(D') not in S] <= e^eps P[M(D) not in S] + delta = e^eps (1 - b) + delta
(Kairouz, Oh, Viswanath 2015; Dong, Roth, Su 2022 call this the trade-off curve f_{eps,delta}).
So every attack's ROC lies under

    b_max(a) = min(1,  e^eps a + delta,  1 - e^-eps (1 - delta - a)).

That is the TPR-at-FPR ceiling (`tpr_ceiling`). The two lines cross at a* = (1 - delta) /
(1 + e^eps), b* = e^eps a* + delta; the second reaches 1 at a = 1 - delta. b_max is the
piecewise-linear concave curve through (0, delta), (a*, b*), (1 - delta, 1), (1, 1), and since
AUC = integral of TPR over FPR and every attack's ROC (randomized thresholds included: the
region under b_max is convex) lies under it, the AUC ceiling is the area under that polygon
(`auc_ceiling`, exact by the trapezoid rule on those four vertices):

    AUC_max = a* (delta + b*) / 2 + (1 - delta - a*) (b* + 1) / 2 + delta.

At eps = 2, delta = 1e-5: AUC_max = 0.881, TPR_max at 0.1% FPR = 0.74%. A mechanism is usually
(eps(delta), delta)-DP for every delta at once (its privacy profile: here from the RDP curve of
the accountant, one (eps, delta) per Renyi order), so each pair is a constraint, and the
ceiling is the lowest of them (`profile_tpr_ceiling`, `profile_auc_ceiling`): min of concave
curves is concave, and it is far tighter than one pair's. The profile's AUC is an integral of
that minimum, computed as an upper Riemann sum on a grid (b_max never decreases), so it errs
upwards: a ceiling must never be under the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from genofed.errors import LocalInputError


def _check(epsilon: float, delta: float) -> None:
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise LocalInputError(f"epsilon must be finite and non-negative, got {epsilon!r}")
    if not 0 <= delta < 1:
        raise LocalInputError(f"delta must be in [0, 1), got {delta!r}")


def tpr_ceiling(fpr: float | np.ndarray, epsilon: float, delta: float) -> np.ndarray:
    """The largest TPR any attack reaches at false-positive rate `fpr` against an
    (epsilon, delta)-DP mechanism (the module docstring's b_max)."""
    _check(epsilon, delta)
    a = np.asarray(fpr, np.float64)
    e = math.exp(epsilon)
    return np.minimum(1.0, np.minimum(e * a + delta, 1.0 - (1.0 - delta - a) / e))


def auc_ceiling(epsilon: float, delta: float) -> float:
    """The largest ROC AUC any attack reaches against an (epsilon, delta)-DP mechanism."""
    _check(epsilon, delta)
    a_star = (1.0 - delta) / (1.0 + math.exp(epsilon))
    b_star = math.exp(epsilon) * a_star + delta
    return (a_star * (delta + b_star) / 2 + (1.0 - delta - a_star) * (b_star + 1.0) / 2
            + delta)


def profile_tpr_ceiling(fpr: float | np.ndarray,
                        profile: Sequence[tuple[float, float]]) -> np.ndarray:
    """The TPR ceiling of a mechanism that is (eps_i, delta_i)-DP for every pair given."""
    if not profile:
        raise LocalInputError("a privacy profile needs at least one (epsilon, delta) pair")
    return np.min([tpr_ceiling(fpr, e, d) for e, d in profile], axis=0)


def profile_auc_ceiling(profile: Sequence[tuple[float, float]], grid: int = 20000) -> float:
    """The AUC ceiling of the profile: an upper Riemann sum of `profile_tpr_ceiling` (and never
    above the lowest single pair's exact ceiling)."""
    right = np.arange(1, grid + 1) / grid
    riemann = float(np.mean(profile_tpr_ceiling(right, profile)))
    return min(riemann, min(auc_ceiling(e, d) for e, d in profile))


def fpr_upper(passed: int, negatives: int, level: float = 0.975) -> float:
    """An upper confidence bound, at `level`, on the population FPR of a threshold that
    `passed` of `negatives` non-members scored above: the Clopper-Pearson bound, the f at
    which P[Binomial(negatives, f) <= passed] = 1 - level (bisection on the exact binomial
    CDF; scipy is not in the coordinator's profile). An attack's TPR "at 0.1% FPR" on a few
    hundred non-members is read at a threshold none of them passes, whose own FPR may well be
    0.5%: its ceiling must be read there, not at the nominal rate."""
    if not 0 <= passed < negatives:
        raise LocalInputError(f"fpr_upper: {passed} of {negatives} non-members passed")

    def cdf(f: float) -> float:
        terms = [math.lgamma(negatives + 1) - math.lgamma(i + 1) - math.lgamma(negatives - i + 1)
                 + i * math.log(f) + (negatives - i) * math.log1p(-f) for i in range(passed + 1)]
        top = max(terms)
        return math.exp(top) * sum(math.exp(t - top) for t in terms)

    lo, hi = 0.0, 1.0
    for _ in range(60):  # the CDF falls as f grows
        mid = (lo + hi) / 2
        if mid <= 0.0 or cdf(mid) > 1 - level:
            lo = mid
        else:
            hi = mid
    return hi


DELTAS = tuple(10.0 ** -k for k in range(1, 13))


def rdp_profile(rdp: np.ndarray, deltas: Sequence[float] = DELTAS
                ) -> list[tuple[float, float]]:
    """(eps(delta), delta) pairs of an RDP curve over `privacy.rdp.ORDERS`, one per delta, by
    the same conversion the accountant uses (`rdp_to_epsilon`); pairs whose epsilon is
    infinite are left out."""
    from genofed.privacy.rdp import rdp_to_epsilon

    out = []
    for d in deltas:
        e = rdp_to_epsilon(np.asarray(rdp, np.float64), d)[0]
        if math.isfinite(e):
            out.append((float(e), float(d)))
    return out
