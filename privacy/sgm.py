"""The Rényi curve of DP-SGD's sampled Gaussian mechanism, numpy only (a clinic's ledger).

Cross-silo rounds are record-level DP: each step of DP-SGD (`agent/dpsgd.py`) samples every
record with probability q, clips each one's gradient to C and adds N(0, (z C)^2). Its RDP at
an integer order alpha is exactly (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of
the Sampled Gaussian Mechanism", Section 3.3)

    eps(alpha) = log( sum_{k=0}^{alpha} C(alpha, k) (1-q)^(alpha-k) q^k e^{(k^2-k)/(2 z^2)} )
                 / (alpha - 1),

the quantity dp-accounting's RDP accountant computes for `PoissonSampledDpEvent(q,
GaussianDpEvent(z))` at integer orders (tested to 1e-9 against it). Written here because a
device checks its owner's cap without dp-accounting (scipy, absl, dm-tree), and the
aggregator's ledger uses the same function so that the two ledgers agree. At a fractional
order the next integer's value is used, an upper bound (a Rényi divergence does not decrease
with its order); the coordinator's `accountant.dpsgd_epsilon` reports dp-accounting's
tighter PLD figure beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from genofed.errors import LocalInputError
from genofed.privacy.rdp import ORDERS


def _log_sum_exp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + math.log(float(np.sum(np.exp(x - top))))


def sampled_gaussian_rdp(noise_multiplier: float, sample_rate: float,
                         orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP of one step of the Poisson-sampled Gaussian mechanism (noise z times the clip)."""
    z, q = float(noise_multiplier), float(sample_rate)
    if not (math.isfinite(z) and z > 0):
        raise LocalInputError(f"noise multiplier must be a finite number > 0, got {z!r}")
    if not 0 < q <= 1:
        raise LocalInputError(f"sample rate must be in (0, 1], got {q!r}")
    a = np.asarray(orders, dtype=np.float64)
    if q == 1:
        return a / (2 * z * z)
    out = np.empty_like(a)
    cache: dict[int, float] = {}
    for i, alpha in enumerate(a):
        m = max(2, math.ceil(alpha))
        if m not in cache:
            k = np.arange(m + 1, dtype=np.float64)
            log_binom = np.array([math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1)
                                  for j in range(m + 1)])
            terms = log_binom + (m - k) * math.log1p(-q) + k * math.log(q) + \
                (k * k - k) / (2 * z * z)
            cache[m] = max(0.0, _log_sum_exp(terms)) / (m - 1)
        out[i] = cache[m]
    return out


def dpsgd_rdp(noise_multiplier: float, sample_rate: float, steps: int,
              orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP of `steps` DP-SGD steps (composition: the sum)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise LocalInputError(f"steps must be an integer >= 0, got {steps!r}")
    return steps * sampled_gaussian_rdp(noise_multiplier, sample_rate, orders)
