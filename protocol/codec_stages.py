"""The scalar stages of the update codec: L2 clip, stochastic rounding, the noise slot, ring wrap.

Every stage (`CodecStage`) has `encode(x, rng)` (device side, one vector) and `decode(y, n)`
(aggregator side, applied to the SUM of n encodings), and checks its parameters when it is
built. A decode is valid on a sum because each decode here is linear (or the identity) on the
values the rule for b in `codec.py` lets through. Randomness comes only from the
`np.random.Generator` passed in. The last stage, `ModularWrap`, makes a ring vector
(`protocol/ring.py`); a bad ring width or vector raises the ring's `RingError`.
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


@dataclass(frozen=True)
class StochasticRounding:
    """Multiply by `scale` and round to a neighbouring integer, up with the fractional part.

    Inputs are clamped to [-max_abs, max_abs] first, so |output| <= ceil(scale * max_abs) even
    when float error in an earlier stage overshoots by an ulp; E[output] = scale * x inside.
    """

    scale: float
    max_abs: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_positive("scale", self.scale))
        object.__setattr__(self, "max_abs", check_positive("max_abs", self.max_abs))
        if self.scale * self.max_abs > MAX_SCALED:
            raise CodecError(f"scale * max_abs = {self.scale * self.max_abs:g} exceeds 2^50: "
                             "float64 cannot carry the fraction that stochastic rounding needs")

    @property
    def bound(self) -> int:
        """The largest |integer| one encoding can hold: ceil(scale * max_abs)."""
        return math.ceil(self.scale * self.max_abs)

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> Ints:
        """floor(v) + Bernoulli(v - floor(v)) for v = scale * clamp(x)."""
        limit = self.scale * self.max_abs
        v = np.clip(np.asarray(x, dtype=np.float64) * self.scale, -limit, limit)
        low = np.floor(v)
        up = rng.random(v.shape) < (v - low)
        return (low + up).astype(np.int64)

    def decode(self, y: np.ndarray, n: int = 1) -> Floats:
        """Divide by the scale (the sum of n roundings is unbiased for scale * the sum)."""
        return np.asarray(y, dtype=np.float64) / self.scale


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
