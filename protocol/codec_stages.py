"""The scalar stages of the update codec: L2 clip, stochastic rounding, the noise slot, ring wrap.

Every stage (`CodecStage`) has `encode(x, rng)` (device side, one vector) and `decode(y, n)`
(aggregator side, applied to the SUM of n encodings), and checks its parameters when it is
built. A decode is valid on a sum because each decode here is linear (or the identity) on the
values the rule for b in `codec.py` lets through. Randomness comes only from the
`np.random.Generator` passed in, except a distributed-DP noise stage's (`privacy/noise.py`),
which must not be reproducible by anyone else and draws from the operating system. The last
stage, `ModularWrap`, makes a ring vector (`protocol/ring.py`); a bad ring width or vector
raises the ring's `RingError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from genofed.errors import LocalInputError
from genofed.protocol.ring import Ring, RingVector

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# Above 2^50, float64 spacing approaches 1 and stochastic rounding stops meaning anything.
MAX_SCALED = 2.0**50


class CodecError(LocalInputError):
    """A codec parameter or an encoded vector that cannot be right; the text names the value."""


class CodecStage(Protocol):
    """One codec stage: `encode` one device's vector, `decode` the sum of n encodings."""

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def decode(self, y: np.ndarray, n: int) -> np.ndarray: ...


class Noise(CodecStage, Protocol):
    """The noise slot: integers in, integers out, and the room its sum needs in the ring.

    `headroom(n)` bounds |sum of the n devices' noise| in any one coordinate and must not
    decrease with n; the rule for b reserves it. A distributed-DP mechanism (discrete Gaussian,
    Skellam) has unbounded noise, so its headroom is a tail bound and its docstring must state
    the probability of exceeding it. Its generator must be a cryptographically seeded one.
    It may also have `norm_headroom(n)`, a tail bound on the L2 norm of n devices' summed
    noise, which the aggregate check (`codec_mean.py`) then uses instead of sqrt(d) H(n).
    """

    def headroom(self, n: int) -> int: ...


def check_positive(name: str, value: float) -> float:
    """Return `value` as a float if it is finite and > 0, else raise CodecError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CodecError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise CodecError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def check_int(name: str, value: int, lo: int, hi: int | None = None) -> int:
    """Return `value` if it is an int in [lo, hi], else raise CodecError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CodecError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise CodecError(f"{name} must be {span}, got {value}")
    return int(value)


@dataclass(frozen=True)
class L2Clip:
    """Scale a vector down to L2 norm `clip` if it is longer; decode is the identity."""

    clip: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip", check_positive("clip", self.clip))

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Floats:
        """x * min(1, clip / ||x||)."""
        v = np.asarray(x, dtype=np.float64)
        norm = float(np.linalg.norm(v))
        return v * (self.clip / norm) if norm > self.clip else v.copy()

    def decode(self, y: np.ndarray, n: int = 1) -> Floats:
        """Clipping is not inverted: the sum passes through."""
        return np.asarray(y, dtype=np.float64)


def rounding_norm_bound(scaled_norm: float, dim: int, beta: float | None = None) -> float:
    """The L2 norm that stochastic rounding of a `dim`-vector of norm <= `scaled_norm` stays
    within: `scaled_norm + sqrt(dim)` always (each coordinate moves by < 1), and with
    `beta` the bound of Kairouz, Liu and Steinke 2021 (ICML, Thm. 1 / Prop. 22 of the arXiv
    version), which unconditioned rounding exceeds with probability <= beta:

        B(beta)^2 = c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)

    (E||q||^2 <= c^2 + d/4 since each coordinate adds variance <= 1/4; the deviation term is
    their concentration bound). The smaller of the two is returned.
    """
    c, root_d = float(scaled_norm), math.sqrt(check_int("dim", dim, 1))
    always = c + root_d
    if beta is None:
        return always
    conditioned = math.sqrt(c * c + dim / 4 + math.sqrt(2 * math.log(1 / beta))
                            * (c + root_d / 2))
    return min(always, conditioned)


def encoded_sensitivity(clip: float, scale: float, dim: int, *,
                        conditional_beta: float | None = None) -> tuple[float, float]:
    """(l2, l1): how far one device's rounded vector (ring units, before noise) can be from the
    zero vector, i.e. the sensitivity of the ring sum to adding or removing one device (twice
    this for replacing one). l2 is `rounding_norm_bound(scale * clip, dim, beta)`; it holds
    for every output, because conditional rounding redraws until it does.

    l1 <= min(sqrt(d) l2, l2^2) for an integer vector q: Cauchy-Schwarz gives
    ||q||_1 <= sqrt(d) ||q||_2, and |q_j| <= q_j^2 for every integer q_j, so
    ||q||_1 <= ||q||_2^2. The second is the smaller once l2 < sqrt(d) (small scales).
    """
    clip, scale = check_positive("clip", clip), check_positive("scale", scale)
    l2 = rounding_norm_bound(scale * clip, dim, check_beta(conditional_beta))
    return l2, min(math.sqrt(dim) * l2, l2 * l2)


def check_beta(beta: float | None) -> float | None:
    """None, or a probability in (0, 1); CodecError naming it otherwise."""
    if beta is not None and not (isinstance(beta, (int, float)) and 0 < beta < 1):
        raise CodecError(f"conditional_beta must be in (0, 1), got {beta!r}")
    return None if beta is None else float(beta)


# Conditional rounding redraws while ||q|| > B; each draw fails with probability <= beta, so
# 200 failures in a row (beta^200 <= 1e-43 at beta = e^-0.5) mean the input was not one the
# bound is for (an L2 norm above max_abs): refuse rather than loop.
MAX_REDRAWS = 200


@dataclass(frozen=True)
class StochasticRounding:
    """Multiply by `scale` and round to a neighbouring integer, up with the fractional part.

    Inputs are clamped to [-max_abs, max_abs] first, so |output| <= ceil(scale * max_abs) even
    when float error in an earlier stage overshoots by an ulp; E[output] = scale * x inside.

    `conditional_beta` (distributed-DP rounds): `max_abs` is also the bound on the input's L2
    norm (the clip), and the rounding is redrawn with fresh randomness until the output's L2
    norm is <= `norm_bound(dim)` (Kairouz, Liu, Steinke 2021), so that one device's vector
    has L2 norm <= B ~ scale*max_abs + d/(8 scale max_abs) instead of scale*max_abs + sqrt(d).
    Each draw exceeds B with probability <= beta (so the expected number of draws is
    <= 1/(1-beta)); conditioning biases the output by at most what that rare event carries.
    None (the default) is plain rounding, bit for bit the same draws as before.
    """

    scale: float
    max_abs: float
    conditional_beta: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_positive("scale", self.scale))
        object.__setattr__(self, "max_abs", check_positive("max_abs", self.max_abs))
        object.__setattr__(self, "conditional_beta", check_beta(self.conditional_beta))
        if self.scale * self.max_abs > MAX_SCALED:
            raise CodecError(f"scale * max_abs = {self.scale * self.max_abs:g} exceeds 2^50: "
                             "float64 cannot carry the fraction that stochastic rounding needs")

    @property
    def bound(self) -> int:
        """The largest |integer| one encoding can hold: ceil(scale * max_abs)."""
        return math.ceil(self.scale * self.max_abs)

    def norm_bound(self, dim: int) -> float:
        """The largest L2 norm of one encoding of a `dim`-vector of L2 norm <= max_abs."""
        return rounding_norm_bound(self.scale * self.max_abs, dim, self.conditional_beta)

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> Ints:
        """floor(v) + Bernoulli(v - floor(v)) for v = scale * clamp(x) (redrawn while its
        norm exceeds the bound, if conditional)."""
        limit = self.scale * self.max_abs
        v = np.clip(np.asarray(x, dtype=np.float64) * self.scale, -limit, limit)
        if self.conditional_beta is None:
            return round_once(v, rng)
        return conditional_round(v, self.norm_bound(v.size), rng)[0]

    def decode(self, y: np.ndarray, n: int = 1) -> Floats:
        """Divide by the scale (the sum of n roundings is unbiased for scale * the sum)."""
        return np.asarray(y, dtype=np.float64) / self.scale


def round_once(v: Floats, rng: np.random.Generator) -> Ints:
    """floor(v) + Bernoulli(v - floor(v)): unbiased, each coordinate moves by < 1."""
    low = np.floor(v)
    up = rng.random(v.shape) < (v - low)
    return (low + up).astype(np.int64)


def conditional_round(v: Floats, bound: float, rng: np.random.Generator) -> tuple[Ints, int]:
    """`round_once(v)` redrawn until its L2 norm is <= bound; (output, number of draws)."""
    for draws in range(1, MAX_REDRAWS + 1):
        q = round_once(v, rng)
        # float64: no int64 overflow, exact while ||q||^2 < 2^53; not np.dot, whose BLAS
        # threads cost 30x more than the sum on a busy 2-core machine
        if float(np.square(q.astype(np.float64)).sum()) <= bound * bound:
            return q, draws
    raise CodecError(f"conditional rounding drew {MAX_REDRAWS} vectors above the L2 bound "
                     f"{bound:.6g}: the input's norm {float(np.linalg.norm(v)):.6g} is not "
                     "one the bound is for")


@dataclass(frozen=True)
class NoNoise:
    """The noise slot left empty: identity, no headroom."""

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return the integers unchanged."""
        return x

    def decode(self, y: np.ndarray, n: int = 1) -> np.ndarray:
        """Return the sum unchanged."""
        return y

    def headroom(self, n: int) -> int:
        """No noise, no room needed."""
        return 0


@dataclass(frozen=True)
class ModularWrap:
    """Signed integers to Z_(2^bits) (two's complement, `Ring.wrap`), and the sum back."""

    bits: int
    ring: Ring = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ring", Ring(self.bits))
        object.__setattr__(self, "bits", self.ring.bits)

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> RingVector:
        """x mod 2^bits; refuses a value that does not fit the signed range on its own."""
        return self.ring.wrap(x)

    def decode(self, y: np.ndarray, n: int = 1) -> Ints:
        """Map [0, 2^bits) to [-2^(bits-1), 2^(bits-1)): the sum, if it did not wrap."""
        return self.ring.unwrap(y)
