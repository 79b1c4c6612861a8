"""The distributed-DP noise stage of the codec: every device adds Skellam noise to its integers.

Skellam(v) is P1 - P2 with P1, P2 independent Poisson(v/2): symmetric, integer, variance v, and
closed under sums (Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially
Private Federated Learning"). Each device adds an independent Skellam(v) to every coordinate,
after the stochastic rounding and before the modular wrap, so the sum of any m survivors'
vectors carries exactly Skellam(m v) per coordinate, whichever devices dropped out. The round is
calibrated for the fewest survivors it accepts (`min_clients`, `privacy/calibrate.py`); `decode`
refuses a sum of fewer, whose noise is below what the accountant assumed.

Randomness. The noise comes from the operating system's CSPRNG (`os.urandom`, through
`privacy/poisson.py`), fresh at every call. The numpy Generator that `encode` is given is
ignored for the noise: the codec's generator is seeded from configuration in places (the
agent's training seed, the simulator's round seed), and noise that anyone else can regenerate
can be subtracted from the sum, leaving no privacy. The sampler's distance from exact Skellam
is `tv_bound` (total variation, per device vector): (1 + e^eps) times it, for every vector
of a round, adds to delta; the aggregator's ledger reports that sum beside delta
(`aggregator/privacy.py`, `sampler_delta`).

Headroom. Skellam noise is unbounded, so the ring's bit rule reserves a tail bound. For
X ~ Skellam(V), E exp(tX) = exp(V (cosh t - 1)) (the product of the two Poisson MGFs), and
Chernoff's bound at its optimum sinh t = a/V gives, for every a >= 0,

    P(X >= a) <= exp(-f_V(a)),   f_V(a) = a asinh(a/V) - V (sqrt(1 + (a/V)^2) - 1)

(exact, no Gaussian approximation; the Poisson tails' Bennett bound in another form). With
symmetry and a union bound over the `dim` coordinates, `headroom(n)` is the smallest integer h
with 2 dim exp(-f_{nv}(h)) <= fail_prob: the probability that any coordinate of n devices'
summed noise exceeds h in absolute value is <= fail_prob (default 2^-40) per round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from genofed.errors import LocalInputError, MessageError
from genofed.privacy.poisson import MAX_LAMBDA, poisson_table
from genofed.protocol.codec_stages import CodecError, Ints, check_int, check_positive
from genofed.protocol.fields import Fields

DEFAULT_FAIL_PROB = 2.0**-40


def skellam_log_tail(a: float, variance: float) -> float:
    """f_V(a): P(X >= a) <= exp(-f_V(a)) for X ~ Skellam(V) (the Chernoff bound above)."""
    r = a / variance
    # V (sqrt(1 + r^2) - 1) written as V r^2 / (sqrt(1 + r^2) + 1): no cancellation at small r
    return a * math.asinh(r) - variance * r * r / (math.sqrt(1 + r * r) + 1)


def skellam_tail_bound(variance: float, dim: int, fail_prob: float) -> int:
    """The smallest integer h with 2 dim exp(-f_V(h)) <= fail_prob: every one of `dim`
    independent Skellam(V) values lies in [-h, h] except with probability <= fail_prob."""
    target = math.log(2 * dim / fail_prob)
    hi = max(1.0, math.sqrt(2 * variance * target))
    while skellam_log_tail(hi, variance) < target:
        hi *= 2
    lo = 0.0
    for _ in range(100):  # f_V is increasing in a: bisection to float precision
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if skellam_log_tail(mid, variance) >= target else (mid, hi)
    return math.ceil(hi) + 1  # +1: never let float rounding make the bound smaller


@dataclass(frozen=True)
class SkellamNoise:
    """The codec's noise stage for distributed DP: Skellam(`variance`) on each of `dim`
    coordinates (ring units), from the OS's randomness; a sum of fewer than `min_clients`
    devices' vectors is refused by `decode`. Plain-number fields, so a signed task can carry
    it (`to_json`/`from_json`)."""

    variance: float
    dim: int
    min_clients: int = 1
    fail_prob: float = DEFAULT_FAIL_PROB

    def __post_init__(self) -> None:
        object.__setattr__(self, "variance", check_positive("noise variance", self.variance))
        if self.variance / 2 > MAX_LAMBDA:
            raise CodecError(f"noise variance {self.variance:g} is above {2 * MAX_LAMBDA:g}: "
                             "lower the codec's scale")
        object.__setattr__(self, "dim", check_int("noise dim", self.dim, 1))
        object.__setattr__(self, "min_clients",
                           check_int("noise min_clients", self.min_clients, 1))
        if not (isinstance(self.fail_prob, float) and 0 < self.fail_prob < 1):
            raise CodecError(f"noise fail_prob must be a float in (0, 1), got "
                             f"{self.fail_prob!r}")

    @property
    def tv_bound(self) -> float:
        """Total variation between one device's noise vector and exact Skellam(variance)^dim."""
        return 2 * self.dim * poisson_table(self.variance / 2).tv_bound

    def sample(self) -> Ints:
        """One device's noise vector: `dim` independent Skellam(variance) values."""
        table = poisson_table(self.variance / 2)
        return table.sample(self.dim) - table.sample(self.dim)

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Ints:
        """x + fresh Skellam noise; `rng` is ignored (the module docstring says why)."""
        y = np.asarray(x)
        if y.shape != (self.dim,) or y.dtype.kind not in "iu":
            raise CodecError(f"the noise stage takes {self.dim} integers, got an array of "
                             f"shape {y.shape} and type {y.dtype}")
        return y.astype(np.int64) + self.sample()

    def decode(self, y: np.ndarray, n: int = 1) -> np.ndarray:
        """The sum passes through; CodecError if n survivors are fewer than the calibration's
        minimum (their noise is below what the accountant assumed)."""
        if n < self.min_clients:
            raise CodecError(f"{n} survivors are fewer than the {self.min_clients} the round's "
                             "DP noise was calibrated for: their sum is not released")
        return y

    def headroom(self, n: int) -> int:
        """A bound on |n devices' summed noise| in every coordinate, exceeded with probability
        <= fail_prob (the Chernoff bound in the module docstring)."""
        check_int("n", n, 1)
        return skellam_tail_bound(n * self.variance, self.dim, self.fail_prob)

    def norm_headroom(self, n: int) -> float:
        """A bound on the L2 norm of n devices' summed noise vector, exceeded with probability
        <= 2 fail_prob: for the aggregate check, ~6 times tighter than sqrt(dim) headroom(n).

        On the event that every |N_j| <= H = headroom(n) (probability >= 1 - fail_prob), the
        N_j stay independent, and Y_j = N_j^2 lies in [0, H^2] with E Y_j <= V/(1-fail_prob)
        and Var Y_j <= E N^4/(1-fail_prob) = (3V^2 + V)/(1-fail_prob) (V = n variance).
        Bernstein's inequality for bounded variables, at probability fail_prob, gives
        sum_j Y_j <= dim V/(1-fail_prob) + t, t = H^2 L/3 + sqrt((H^2 L/3)^2 + 2 dim s^2 L),
        L = ln(1/fail_prob), s^2 the variance bound."""
        big_v, h = n * self.variance, self.headroom(n)
        keep = 1 - self.fail_prob
        log_p = math.log(1 / self.fail_prob)
        lin = h * h * log_p / 3
        t = lin + math.sqrt(lin * lin + 2 * self.dim * (3 * big_v**2 + big_v) / keep * log_p)
        return math.sqrt(self.dim * big_v / keep + t)

    def to_json(self) -> dict[str, Any]:
        return {"variance": self.variance, "dim": self.dim, "min_clients": self.min_clients,
                "fail_prob": self.fail_prob}

    @classmethod
    def from_json(cls, f: Fields) -> SkellamNoise:
        """The stage from `to_json`'s fields; MessageError naming a missing or bad one."""
        try:
            return cls(variance=f.number("variance"), dim=f.integer("dim", 1),
                       min_clients=f.integer("min_clients", 1),
                       fail_prob=f.number("fail_prob"))
        except (MessageError, LocalInputError) as exc:
            raise MessageError(f"bad noise spec: {exc}") from None
