"""Poisson samples from the operating system's randomness, by inverse CDF over an integer table.

Why our own sampler: numpy's `Generator.poisson` is exact given ideal uniforms, but its
generators (PCG64, Philox, SFC64) are not cryptographic, and the noise of a distributed-DP round
must be unpredictable to everyone but the device (`privacy/noise.py` says why). Here every
sample is one 63-bit integer from `os.urandom` (the kernel's CSPRNG, `getrandom(2)`) looked up
in a table of cumulative integer counts, so the only distance from Poisson(lam) is the table's:

- pmf: computed with Loader's saddle-point method ("Fast and accurate computation of binomial
  probabilities", 2000; what R's `dpois` does): p(k) = exp(-stirlerr(k) - bd0(k, lam)) /
  sqrt(2 pi k), with bd0(k, lam) = k log(k/lam) + lam - k summed as a series near lam. Unlike
  k log(lam) - lam - lgamma(k+1), which loses ~k log(lam) * 2^-53 of relative accuracy (1e-9
  at lam = 10^6), each value is within PMF_REL_ERR * (1 + bd0(k, lam)) of p(k), relative, with
  PMF_REL_ERR = 2^-49 (the error of a float log of size bd0; measured <= 2^-50.2 against
  mpmath at 40 digits, lam from 0.3 to 3.3*10^6; `tests/unit/test_dp_noise.py` checks it), so
  its total variation is <= PMF_REL_ERR * E[1 + bd0(X, lam)] / 2 (E bd0 ~ 1/2), summed per
  table.
- truncation: the table spans [lam - a, lam + b] with each tail <= 2^-70 by the Chernoff bound
  P(X >= lam + t) <= exp(-lam h(t/lam)), P(X <= lam - t) <= exp(-lam h(-t/lam)),
  h(u) = (1+u) ln(1+u) - u.
- quantization: counts are the pmf times 2^63 rounded to integers (the remainder, at most T/2,
  on the mode), so the table's total variation from the float pmf is <= T * 2^-64.

`PoissonTable.tv_bound` adds the three: the total variation distance between one sample and
Poisson(lam), <= 2^-49 up to lam = 10^5 (T ~ 6000 entries) and 2^-47.5 at lam = 1.2*10^7. Why
that is enough: a mechanism within total variation eta of an (eps, delta)-DP one (for every
input) is (eps, delta + (1 + e^eps) eta)-DP, and a round's eta is at most the sum over its
samples (2 per coordinate per device: `SkellamNoise.tv_bound` per device), which the accountant
adds to delta. For 1000 devices and 10^4 coordinates, 2*10^7 samples at 2^-49.4 give eta =
2.7e-8; at eps = 2 that adds 2.3e-7 to delta, 2% of delta = 1e-5.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt

# stirlerr(n) = lgamma(n+1) - (n + 1/2) log n + n - log sqrt(2 pi), n = 0..15, from mpmath at
# 50 digits (the series below is accurate from 16 on); the test recomputes them.
_STIRLERR_SMALL = np.array([
    0.0,  # n = 0 is never used
    0.08106146679532726, 0.0413406959554093, 0.02767792568499834, 0.020790672103765093,
    0.016644691189821193, 0.013876128823070748, 0.01189670994589177, 0.010411265261972096,
    0.009255462182712733, 0.00833056343336287, 0.007573675487951841, 0.00694284010720953,
    0.006408994188004207, 0.0059513701127588475, 0.005554733551962801,
])
_TAIL_LOG = 70 * math.log(2)  # each truncated tail <= 2^-70
_QUANT_BITS = 63
PMF_REL_ERR = 2.0**-49  # relative error of p(k), per unit of 1 + bd0(k, lam); see the test
MAX_LAMBDA = 1e12  # beyond, the table (~20 sqrt(lam) entries) is too large for a device

Ints = npt.NDArray[np.int64]


def stirlerr(k: np.ndarray) -> np.ndarray:
    """log(k!) - log(sqrt(2 pi k) (k/e)^k) for integers k >= 1 (float array)."""
    k = np.asarray(k, dtype=np.float64)
    small = k < 16
    kk = np.where(small, 16.0, k)  # the series on large k only; no divide by 0 on small
    k2 = kk * kk
    series = (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / 1188 / k2) / k2) / k2) / k2) / kk
    table = _STIRLERR_SMALL[np.where(small, k, 0).astype(np.int64)]
    return np.where(small, table, series)


def bd0(k: np.ndarray, lam: float) -> np.ndarray:
    """k log(k/lam) + lam - k, accurate in relative terms also when k is near lam (k >= 1)."""
    k = np.asarray(k, dtype=np.float64)
    diff = k - lam
    near = np.abs(diff) < 0.5 * (k + lam)
    # far (k > 3 lam or k < lam/3): the terms cancel by a factor < 3
    far = k * np.log(np.where(near, 1.0, k / lam)) + lam - k
    # near: with v = (k-lam)/(k+lam), bd0 = (k-lam) v + 2k sum_j v^(2j+1)/(2j+1); |v| < 1/2,
    # every term positive (no cancellation). R's dpois switches at |v| < 0.1 and loses up to
    # a factor ~10 just outside; the wider series keeps the relative error at a few ulps.
    v = np.where(near, diff / (k + lam), 0.0)
    v2 = v * v
    term = 2 * k * v
    total = diff * v
    for j in range(1, 64):  # v^128 < 2^-128: converged
        term = term * v2
        total = total + term / (2 * j + 1)
    return np.where(near, total, far)


def poisson_pmf(k: np.ndarray, lam: float) -> np.ndarray:
    """P(X = k) for X ~ Poisson(lam), k >= 0 integers (float array), to a few ulps."""
    k = np.asarray(k, dtype=np.float64)
    pos = np.where(k > 0, k, 1.0)
    p = np.exp(-stirlerr(pos) - bd0(pos, lam)) / np.sqrt(2 * math.pi * pos)
    return np.where(k > 0, p, math.exp(-lam))


def _tail_width(lam: float, upper: bool) -> float:
    """The smallest t (to 1e-9) with the Chernoff bound exp(-lam h(+-t/lam)) <= 2^-70."""
    def log_bound(t: float) -> float:
        u = t / lam if upper else -t / lam
        return lam * ((1 + u) * math.log1p(u) - u) if u > -1 else math.inf

    lo, hi = 0.0, max(1.0, 2 * math.sqrt(2 * lam * _TAIL_LOG))
    while log_bound(hi) < _TAIL_LOG:
        if not upper and hi >= lam:
            return lam  # the lower tail is empty below 0
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if log_bound(mid) >= _TAIL_LOG else (mid, hi)
    return hi


@dataclass(frozen=True)
class PoissonTable:
    """Inverse-CDF table of Poisson(lam): sample = `low` + the first index whose cumulative
    count exceeds a uniform 63-bit integer."""

    lam: float
    low: int = field(init=False)
    cumulative: np.ndarray = field(init=False, repr=False, compare=False)
    tv_bound: float = field(init=False)

    def __post_init__(self) -> None:
        lam = float(self.lam)
        if not (math.isfinite(lam) and 0 < lam <= MAX_LAMBDA):
            raise ValueError(f"Poisson mean must be in (0, {MAX_LAMBDA:g}], got {self.lam!r}")
        low = max(0, math.floor(lam - _tail_width(lam, upper=False)))
        high = math.ceil(lam + _tail_width(lam, upper=True))
        ks = np.arange(low, high + 1)
        p = poisson_pmf(ks, lam)
        counts = np.rint(p / p.sum() * 2.0**_QUANT_BITS).astype(np.uint64)  # < 2^63 each
        mode = int(np.argmax(counts))  # the remainder (|r| <= size/2) goes on the mode
        fixed = int(counts[mode]) + (1 << _QUANT_BITS) - int(counts.sum(dtype=np.uint64))
        counts[mode] = np.uint64(fixed)
        cumulative = np.cumsum(counts, dtype=np.uint64)
        assert int(cumulative[-1]) == 1 << _QUANT_BITS
        size = high - low + 1
        object.__setattr__(self, "lam", lam)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "cumulative", cumulative)
        pmf_tv = PMF_REL_ERR * float(np.dot(p, 1 + bd0(np.maximum(ks, 1), lam))) / 2
        object.__setattr__(self, "tv_bound", 2 * 2.0**-70 + pmf_tv
                           + size * 2.0**-(_QUANT_BITS + 1))

    @property
    def size(self) -> int:
        return int(self.cumulative.size)

    def sample(self, count: int) -> Ints:
        """`count` independent Poisson(lam) values, fresh from os.urandom."""
        u = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) >> np.uint64(1)
        return self.low + np.searchsorted(self.cumulative, u, side="right").astype(np.int64)


@lru_cache(maxsize=8)
def poisson_table(lam: float) -> PoissonTable:
    """The table for lam, built once per process (a round's lam does not change)."""
    return PoissonTable(lam)
