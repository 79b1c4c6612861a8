"""Neighbour degree k and Shamir threshold t from n, a corrupt fraction and a dropout fraction.

The rule is the one of Bell et al. 2020 ("Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020, Sec. 4 and Thm. 4.8 on Harary graphs) as Google's
federated compute platform computes it (`fcp/secagg/server/graph_parameter_finder.cc`,
`HararyGraphParameterFinder`, whose test publishes tables of (n, corrupt, dropout) -> (k, t)),
for its SEMI_MALICIOUS_SERVER adversary, the one that lies about who dropped:

- statistical security sigma = 40 bits, correctness (round failure) eta = 20 bits;
- A = floor(corrupt * n) corrupt clients, D = floor(dropout * n) dropouts, S = n - D survivors;
- for even k = 2, 4, ... (and last k = n - 1, classic SecAgg on the complete graph), accept
  the first k where
  1. the Harary graph stays connected once corrupt and dropped clients are removed: the union
     bound over pairs of k/2-runs of bad clients, n (n - k - 1) / 2 * (A+D)! (n-k)! /
     (n! (A+D-k)!), is below 2^-(sigma+1);
  2. t1 = the least t with P[corrupt neighbours > t] < 2^-(sigma+1) / n (hypergeometric:
     k neighbours drawn from n with A corrupt), raised to ceil((t1 + k - 1.25) / 2) so that
     2t - k exceeds the corrupt neighbours (a lying server cannot get t shares of both kinds);
  3. t2 = the greatest t with P[surviving neighbours < t] < 2^-eta / n;
  and t1 < t2; then t = max(t1 + 1, 2).
- infeasible (refused): corrupt + 2 * dropout > 0.9.

A client that accuses a neighbour of sealing it bad shares (`blame.py`) reveals only their
pairwise key, which opens nothing the accused cannot open itself: accusers are not counted
among the A corrupt clients, and an excluded culprit is a dropout like any other.

Explicit (n, k, t) are refused when they cannot be safe: t < 2, t <= k/2, t > k, k > n - 1,
an odd k below n - 1 (no Harary graph), or an expected (1 - dropout) k survivors per
neighbourhood below t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from genofed.protocol.secagg.errors import ParameterError

SECURITY_BITS = 40
CORRECTNESS_BITS = 20
_SMALL = 1e-14  # keeps float rounding of rate * n from moving a bound the insecure way


@dataclass(frozen=True)
class SecAggParams:
    """n clients, each with k neighbours that hold t-of-k Shamir shares of its secrets."""

    n: int
    k: int
    t: int

    def __post_init__(self) -> None:
        n, k, t = self.n, self.k, self.t
        if not all(isinstance(v, int) for v in (n, k, t)):
            raise ParameterError(f"n, k, t must be integers, got {n!r}, {k!r}, {t!r}")
        if n < 3:
            raise ParameterError(f"secure aggregation needs n >= 3 clients, got n={n}")
        if not 2 <= k <= n - 1:
            raise ParameterError(f"degree k={k} must be in 2..n-1={n - 1}")
        if k % 2 and k != n - 1:
            raise ParameterError(f"degree k={k} must be even (Harary graph) or n-1={n - 1}")
        if t < 2:
            raise ParameterError(f"threshold t={t} must be >= 2 (t=1 hands out the secret)")
        if t > k:
            raise ParameterError(f"threshold t={t} exceeds the k={k} shares")
        if 2 * t <= k:
            raise ParameterError(f"threshold t={t} must exceed k/2={k / 2}: otherwise a server "
                                 "that lies about dropouts can collect both shares of a client")

    def check_dropout(self, dropout: float) -> None:
        """Refuse a dropout rate that leaves fewer than t expected survivors per neighbourhood."""
        _check_rate("dropout", dropout)
        if (1 - dropout) * self.k < self.t:
            raise ParameterError(
                f"expected survivors per neighbourhood (1 - {dropout}) * k={self.k} = "
                f"{(1 - dropout) * self.k:.1f} are below the threshold t={self.t}")


def choose_parameters(n: int, corrupt: float, dropout: float, *,
                      security_bits: int = SECURITY_BITS,
                      correctness_bits: int = CORRECTNESS_BITS) -> SecAggParams:
    """The smallest safe (k, t) for n clients under the rule in this module's docstring."""
    if not isinstance(n, int) or n < 3:
        raise ParameterError(f"secure aggregation needs n >= 3 clients, got {n!r}")
    _check_rate("corrupt", corrupt)
    _check_rate("dropout", dropout)
    if corrupt + 2 * dropout > 0.9:
        raise ParameterError(f"corrupt + 2 * dropout = {corrupt + 2 * dropout:.3g} > 0.9: no "
                             "parameters are safe against a server that lies about dropouts")
    bad = math.floor((corrupt + _SMALL) * n)
    dropped = math.floor((dropout + _SMALL) * n)
    survivors = math.ceil((1 - dropout - _SMALL) * n)
    q_sec = 2.0 ** -(security_bits + 1) / n
    q_cor = 2.0 ** -correctness_bits / n
    for k in [*range(2, n - 1, 2), n - 1]:
        if k < n - 1 and _log_p_disconnected(n, k, bad + dropped) >= -(security_bits + 1) * \
                math.log(2):
            continue
        adversarial = _Hypergeometric(n, bad, k)
        t1 = next(t for t in range(k + 1) if adversarial.sf(t) < q_sec)
        t1 = math.ceil((t1 + k - 1.25) / 2)
        surviving = _Hypergeometric(n, survivors, k)
        t2 = max((t for t in range(k + 1) if surviving.cdf(t - 1) < q_cor), default=-1)
        if t2 > t1:
            return SecAggParams(n, k, max(t1 + 1, 2))
    raise ParameterError(f"no (k, t) is safe for n={n}, corrupt={corrupt}, dropout={dropout}")


def _check_rate(name: str, rate: float) -> None:
    if not 0 <= rate < 1:
        raise ParameterError(f"{name} fraction must be in [0, 1), got {rate!r}")


def _log_p_disconnected(n: int, k: int, bad: int) -> float:
    """Union bound on a random Harary(n, k) graph being cut by `bad` removed clients."""
    if k > bad:
        return -math.inf
    pairs = math.log(n) + math.log(n - k - 1) - math.log(2)
    return pairs + math.lgamma(bad + 1) + math.lgamma(n - k + 1) - math.lgamma(n + 1) \
        - math.lgamma(bad - k + 1)


class _Hypergeometric:
    """Marked items among `sampled` drawn without replacement from `total` with `marked`."""

    def __init__(self, total: int, marked: int, sampled: int) -> None:
        norm = _lchoose(total, sampled)
        xs = range(max(0, sampled - (total - marked)), min(sampled, marked) + 1)
        self.lo = xs.start
        pmf = np.array([math.exp(_lchoose(marked, x) + _lchoose(total - marked, sampled - x)
                                 - norm) for x in xs])
        self._cdf = np.cumsum(pmf)  # small lower-tail terms are summed first
        self._sf = np.cumsum(pmf[::-1])[::-1]  # _sf[i] = P[X >= lo + i], upper tail first

    def cdf(self, x: int) -> float:
        """P[X <= x]."""
        i = x - self.lo
        return 0.0 if i < 0 else float(self._cdf[min(i, self._cdf.size - 1)])

    def sf(self, x: int) -> float:
        """P[X > x]."""
        i = x + 1 - self.lo
        return 1.0 if i <= 0 else (float(self._sf[i]) if i < self._sf.size else 0.0)


def _lchoose(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
