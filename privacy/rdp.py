"""Rényi-DP curves of the mechanisms genofed runs, their amplification and conversion; numpy only.

A device imports this module to check, before it spends any privacy, the epsilon a signed task
claims against its owner's cap, so it needs numpy and the standard library only (no scipy, no
dp-accounting, no torch). The coordinator's `accountant.py` uses dp-accounting for every event
that library has; this module holds what it has not:

- the Skellam mechanism's RDP bound (Agarwal, Kairouz, Liu 2021), the distributed noise of the
  cross-device deployment;
- amplification by Poisson sampling of an arbitrary RDP curve (Zhu & Wang 2019): dp-accounting's
  RDP accountant amplifies only Gaussian (and Laplace) events, not a curve we hand it;
- the RDP-to-(epsilon, delta) conversion, written out again here so that a device computes the
  same number as the coordinator's dp-accounting (tested to 1e-9 against it).

An RDP curve is a vector over `ORDERS`; composing mechanisms adds their curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from genofed.errors import LocalInputError

# Orders alpha of every RDP curve genofed stores: fractional ones for weak noise, every integer
# from 2 to 64 (the Skellam bound and the Poisson-sampling bound hold at integer orders), and a
# few large ones for strong noise. Fixed: ledgers add curves over these orders.
ORDERS: tuple[float, ...] = (
    1.1, 1.25, 1.5, 1.75,
    *(float(a) for a in range(2, 65)),
    72.0, 80.0, 96.0, 112.0, 128.0, 160.0, 192.0, 224.0, 256.0,
)


def _finite(name: str, value: float, *, positive: bool = True) -> float:
    """`value` as a float, or one line naming it when it is not finite (and positive)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LocalInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        kind = "a positive" if positive else "a non-negative"
        raise LocalInputError(f"{name} must be {kind} finite number, got {value!r}")
    return v


def _delta(delta: float) -> float:
    d = _finite("delta", delta)
    if not d < 1:
        raise LocalInputError(f"delta must lie in (0, 1), got {delta!r}")
    return d


def _rate(name: str, q: float) -> float:
    v = _finite(name, q)
    if v > 1:
        raise LocalInputError(f"{name} must lie in (0, 1], got {q!r}")
    return v


def _count(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LocalInputError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _orders(orders: Sequence[float]) -> np.ndarray:
    a = np.asarray(orders, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 1):
        raise LocalInputError(f"RDP orders must be finite numbers above 1, got {orders!r}")
    if np.any(np.diff(a) <= 0):
        raise LocalInputError("RDP orders must be strictly increasing")
    return a


def _curve(rdp: Sequence[float] | np.ndarray, a: np.ndarray, name: str = "rdp") -> np.ndarray:
    r = np.asarray(rdp, dtype=np.float64)
    if r.shape != a.shape:
        raise LocalInputError(f"{name} has shape {r.shape}, the orders {a.shape}")
    if np.any(np.isnan(r)) or np.any(r < 0):
        bad = r[np.isnan(r) | (r < 0)][0]
        raise LocalInputError(f"{name} must be non-negative (inf allowed), found {bad!r}")
    return r


def gaussian_rdp(noise_multiplier: float, orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP of the Gaussian mechanism, noise standard deviation z times the L2 sensitivity."""
    z = _finite("noise_multiplier", noise_multiplier)
    return _orders(orders) / (2.0 * z * z)


def skellam_rdp(*, l2: float, l1: float, variance: float,
                orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP of an integer-vector sum released with symmetric Skellam noise of `variance` per entry.

    One unit (a device) changes the sum by an integer vector of L2 norm <= `l2` and L1 norm <=
    `l1`; `variance` is the variance, per coordinate, of the noise the survivors' shares add up
    to (ring units). Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private
    Federated Learning" (NeurIPS 2021), Theorem 3.5 / Corollary 3.6, for noise Sk(mu, mu) of
    variance 2 mu and integer alpha > 1:

        eps(alpha) <= alpha l2^2 / (4 mu) + min(((2 alpha - 1) l2^2 + 6 l1) / (16 mu^2),
                                                3 l1 / (4 mu)),

    here with mu = variance / 2 (the form the authors' accounting code, google-research/federated
    distributed_dp/accounting_utils.py `_skellam_rdp`, uses with central_var = variance). The
    first term is the Gaussian mechanism's; the min is the price of discreteness, which vanishes
    as the variance grows. Two tightenings that hold for integer vectors x: ||x||_1 <= ||x||_2^2,
    so l1 is capped at l2^2; and at a fractional order the bound at the next integer order is
    used (a Rényi divergence never decreases with its order).
    """
    s2 = _finite("l2 sensitivity", l2)
    s1 = _finite("l1 sensitivity", l1)
    var = _finite("noise variance", variance)
    if s1 < s2:
        raise LocalInputError(
            f"l1 sensitivity {l1!r} is below l2 sensitivity {l2!r}: a vector's L1 norm is at "
            "least its L2 norm")
    s1 = min(s1, s2 * s2)
    a = np.ceil(_orders(orders))
    gaussian = a * s2 * s2 / (2.0 * var)
    discrete = np.minimum(((2.0 * a - 1.0) * s2 * s2 + 6.0 * s1) / (4.0 * var * var),
                          3.0 * s1 / (2.0 * var))
    return gaussian + discrete


def _log_binom(n: int, k: np.ndarray) -> np.ndarray:
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    return math.lgamma(n + 1) - lg(k + 1) - lg(n - k + 1)


def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(x - m))))


def poisson_subsampled_rdp(rdp: Sequence[float] | np.ndarray, q: float,
                           orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP of any mechanism run on a Poisson sample (each unit in with probability `q`).

    Hand-written because dp-accounting's RDP accountant amplifies only the Gaussian and Laplace
    events it knows, not an arbitrary curve such as the Skellam bound. This is the general upper
    bound of Zhu & Wang, "Poisson Subsampled Rényi Differential Privacy" (ICML 2019, Theorem 5):
    for integer alpha >= 2,

        (alpha - 1) eps'(alpha) <= log[(1-q)^(alpha-1) (alpha q - q + 1)
            + C(alpha,2) q^2 (1-q)^(alpha-2) e^eps(2)
            + 3 sum_{l=3..alpha} C(alpha,l) q^l (1-q)^(alpha-l) e^((l-1) eps(l))]

    (their Theorem 6, without the 3, is exact only for mechanisms such as the Gaussian that meet
    its condition, which nobody has shown for the Skellam; google-research's distributed_dp
    accounting uses this same Theorem 5 for its Skellam and DDG events). Computed in log space,
    so order 256 does not overflow. eps(l) at an integer l missing from `orders` is bounded by
    the curve at the next larger order (RDP grows with the order); a fractional order takes the
    bound at its ceiling; and the result never exceeds the unsampled curve.
    """
    a = _orders(orders)
    r = _curve(rdp, a)
    rate = _rate("sample rate", q)
    if rate == 1.0:
        return r.copy()
    top = math.ceil(a[-1])
    ints = np.arange(top + 1, dtype=np.float64)
    # eps(l) for l = 0..top: the least curve value at an order >= l (sound: monotone in order).
    suffix_min = np.minimum.accumulate(r[::-1])[::-1]
    idx = np.searchsorted(a, ints, side="left")
    eps_int = suffix_min[np.minimum(idx, a.size - 1)]
    log_q, log_1q = math.log(rate), math.log1p(-rate)

    def at_integer(m: int) -> float:
        if math.isinf(eps_int[m]):
            return math.inf
        ls = np.arange(2, m + 1)
        terms = (_log_binom(m, ls.astype(np.float64)) + ls * log_q + (m - ls) * log_1q
                 + (ls - 1) * eps_int[ls])
        terms[1:] += math.log(3.0)  # l >= 3
        head = (m - 1) * log_1q + math.log1p((m - 1) * rate)
        if np.max(terms) < -1.0:  # the sum is 1 + small: keep the small part's precision
            return math.log1p(math.expm1(head) + float(np.sum(np.exp(terms)))) / (m - 1)
        return _logsumexp(np.concatenate(([head], terms))) / (m - 1)

    cache: dict[int, float] = {}
    out = np.empty_like(r)
    for i, alpha in enumerate(a):
        m = max(2, math.ceil(alpha))
        if m not in cache:
            cache[m] = at_integer(m)
        out[i] = min(cache[m], r[i])
    return out


def rdp_to_epsilon(rdp: Sequence[float] | np.ndarray, delta: float,
                   orders: Sequence[float] = ORDERS) -> tuple[float, float]:
    """(epsilon, best order) of a mechanism with the RDP curve `rdp`, at `delta`.

    The conversion dp-accounting 0.6's RDP accountant uses (`rdp_privacy_accountant.
    compute_epsilon`): Canonne, Kamath, Steinke 2020 (Proposition 12) / Asoodeh et al. 2020,
    eps = rdp + log(1 - 1/alpha) - log(delta alpha) / (alpha - 1), at orders above 1.01; zero
    where the KL bound delta^2 >= 1 - exp(-rdp) already gives it.
    """
    a = _orders(orders)
    r = _curve(rdp, a)
    d = _delta(delta)
    with np.errstate(invalid="ignore"):
        eps = r + np.log1p(-1.0 / a) - np.log(d * a) / (a - 1.0)
    eps = np.where(a > 1.01, eps, np.inf)
    eps = np.where(d * d + np.expm1(-r) > 0, 0.0, eps)
    eps = np.where(np.isinf(r), np.inf, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(a[best])


def compose(rdps: Sequence[Sequence[float] | np.ndarray],
            orders: Sequence[float] = ORDERS) -> np.ndarray:
    """The RDP curve of running mechanisms one after the other: the sum of their curves."""
    a = _orders(orders)
    total = np.zeros_like(a)
    for i, r in enumerate(rdps):
        total = total + _curve(r, a, f"rdp[{i}]")
    return total


def skellam_epsilon(*, rounds: int, l2: float, l1: float, variance: float, delta: float,
                    sample_rate: float | None = None,
                    orders: Sequence[float] = ORDERS) -> float:
    """Epsilon of `rounds` Skellam releases, amplified by Poisson sampling if a rate is given."""
    n = _count("rounds", rounds)
    per_round = skellam_rdp(l2=l2, l1=l1, variance=variance, orders=orders)
    if sample_rate is not None:
        per_round = poisson_subsampled_rdp(per_round, sample_rate, orders)
    return rdp_to_epsilon(n * per_round, delta, orders)[0]


def calibrate_skellam(target_epsilon: float, delta: float, *, rounds: int, l2: float, l1: float,
                      sample_rate: float | None = None,
                      orders: Sequence[float] = ORDERS) -> float:
    """The least summed-noise variance keeping `rounds` Skellam releases within the target.

    Epsilon falls as the variance grows (every term of the bound, the sampling bound and the
    conversion are monotone), so bisection on log(variance) finds it; the answer errs on the
    side of more noise, with epsilon at most the target and within 0.1% of it.
    """
    target = _finite("target epsilon", target_epsilon)
    _delta(delta)
    _count("rounds", rounds)

    def eps(v: float) -> float:
        return skellam_epsilon(rounds=rounds, l2=l2, l1=l1, variance=v, delta=delta,
                               sample_rate=sample_rate, orders=orders)

    hi = 1.0
    while eps(hi) > target:
        hi *= 4.0
        if hi > 1e40:
            raise LocalInputError(f"target epsilon {target_epsilon!r} is out of reach")
    lo = hi / 4.0
    while eps(lo) <= target and lo > 1e-30:
        hi, lo = lo, lo / 4.0
    for _ in range(200):
        e_hi = eps(hi)
        if e_hi >= 0.999 * target or hi / lo < 1 + 1e-12:
            break
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi
