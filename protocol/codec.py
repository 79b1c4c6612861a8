"""The update codec: a device's float update to a vector in Z_(2^b), and the mean of n back.

    device:      delta --L2Clip(C)--> --Rotation(seed)--> --StochasticRounding(s)--> --noise-->
                 --ModularWrap(b)--> ring vector --(SecAgg+ masks)--> --BitPacking(b)--> wire
    aggregator:  unpack, sum mod 2^b, unmask --> MeanPipeline.decode_mean(sum, n) --> checked
                 mean of the n survivors' updates

A ring vector is a `RingVector` of `protocol/ring.py`, in the ring's word dtype, all the way from
`encode` through the masks, the wire and the sum to `decode_sum`.

`decode_sum` undoes the wrap, the noise slot, the scale and the rotation on the sum; clipping
and rounding are not inverted (the rounding is unbiased, the clip is the contract).

The rule for b (`choose_bits`, `max_clients`)
---------------------------------------------
Let u_i be device i's clipped vector, ||u_i||_2 <= C. The rotation R is orthogonal, so every
coordinate of R u_i is at most ||R u_i||_2 = ||u_i||_2 <= C in absolute value. Scaling by s and
stochastic rounding (clamped at +-sC, so float error cannot push past it) gives integers with
|q_ij| <= ceil(s*C). A sum of n of them has |sum_i q_ij| <= n*ceil(s*C), and Z_(2^b) decodes
to the signed range [-2^(b-1), 2^(b-1) - 1]. So the sum cannot wrap when

    2^(b-1) - 1 >= n * ceil(s*C) + H(n)

with H(n) the noise stage's headroom (0 for `NoNoise`). This is the default rule. It holds for
every input, including the worst one, R^T (C e_j), which puts a device's whole norm on one
coordinate, and the bound is attained there, so it cannot be tightened without assumptions.

Opt-in, `wrap_prob=delta`: a tighter rule that holds with probability >= 1 - delta over the
round's rotation seed, for inputs that do not depend on that seed. For a fixed v = sum_i u_i
(||v|| <= n*C), each coordinate of R v is a Rademacher sum over a window of N coordinates
(`rotation.py`), so Hoeffding and a union bound over the d coordinates give
|(R v)_j| <= n*C*tau with tau = sqrt(2 ln(2d/delta) / N). With the rounding errors (< 1 each):

    2^(b-1) - 1 >= ceil(s*n*C*tau) + n + H(n)

For d = 10^5 and delta = 1e-9, tau = 0.028: about 5 bits fewer. It is not the default because a
wrap is silent (a coordinate comes back off by 2^b/s and nothing says so), and because every
device knows the seed, so an input aimed at one rotated coordinate (a bug, or a device poisoning
the round) breaks it. The rotation buys bits only under this rule; under the default it is
there for the distributed-DP stage that will use the noise slot.

Secure rounds use `MeanPipeline` (`codec_mean.py`): equal weights, and the survivors' sum
checked against what clipped updates can make before it becomes their mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genofed.protocol.codec_packing import BitPacking, pack_bits, packed_size, unpack_bits
from genofed.protocol.codec_stages import (
    CodecError,
    CodecStage,
    Floats,
    L2Clip,
    ModularWrap,
    Noise,
    NoNoise,
    StochasticRounding,
    check_int,
    check_positive,
)
from genofed.protocol.ring import MAX_BITS, Ring, RingVector
from genofed.protocol.rotation import Rotation, fwht

__all__ = [
    "BitPacking", "CodecError", "CodecStage", "L2Clip", "ModularWrap", "NoNoise", "Noise",
    "Pipeline", "Rotation", "StochasticRounding", "build_pipeline", "choose_bits", "fwht",
    "max_clients", "pack_bits", "packed_size", "sum_bound", "unpack_bits",
]


def sum_bound(n: int, clip: float, scale: float, *, dim: int | None = None,
              wrap_prob: float | None = None,
              noise: Noise | None = None) -> int:
    """The largest |coordinate| that a sum of n encodings can reach (see the rule above)."""
    check_int("n", n, 1)
    clip, scale = check_positive("clip", clip), check_positive("scale", scale)
    per_device = StochasticRounding(scale, clip).bound
    vector = n * per_device
    if wrap_prob is not None:
        if dim is None:
            raise CodecError("wrap_prob needs the vector length dim")
        check_int("dim", dim, 1)
        if not (0 < wrap_prob < 1):
            raise CodecError(f"wrap_prob must be in (0, 1), got {wrap_prob!r}")
        window = 1 << (dim.bit_length() - 1)
        tau = math.sqrt(2 * math.log(2 * dim / wrap_prob) / window)
        # +1: the product is a float; never let its rounding make the bound smaller.
        vector = min(vector, math.ceil(scale * n * clip * tau) + 1 + n)
    return vector + (noise or NoNoise()).headroom(n)


def choose_bits(n: int, clip: float, scale: float, *, dim: int | None = None,
                wrap_prob: float | None = None, noise: Noise | None = None) -> int:
    """The smallest b whose signed range holds a sum of n encodings; refuses b > 64."""
    bound = sum_bound(n, clip, scale, dim=dim, wrap_prob=wrap_prob, noise=noise)
    bits = bound.bit_length() + 1  # 2^(b-1) - 1 >= bound  <=>  b - 1 >= bound.bit_length()
    if bits > MAX_BITS:
        raise CodecError(f"n={n}, clip={clip}, scale={scale} need {bits} bits; at most "
                         f"{MAX_BITS} are supported: lower the scale or the clip")
    return bits


def max_clients(bits: int, clip: float, scale: float, *, dim: int | None = None,
                wrap_prob: float | None = None, noise: Noise | None = None) -> int:
    """The largest n whose sum fits in `bits` (the inverse of `choose_bits`); refuses n < 1."""
    check_int("bits", bits, 1, MAX_BITS)
    top = (1 << (bits - 1)) - 1

    def fits(n: int) -> bool:
        return sum_bound(n, clip, scale, dim=dim, wrap_prob=wrap_prob, noise=noise) <= top

    if not fits(1):
        raise CodecError(f"bits={bits} cannot hold even one update of clip={clip} at "
                         f"scale={scale}: use choose_bits or a smaller scale")
    lo, hi = 1, max(top, 1)  # sum_bound(n) >= n, so n <= top
    while lo < hi:  # the largest n with fits(n); sum_bound grows with n
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


@dataclass(frozen=True)
class Pipeline:
    """A list of stages ending in a ModularWrap, and how many summands its ring can hold.

    `max_clients` is a promise that the caller makes; `build_pipeline` derives it from the
    rule for b, and `decode_sum` refuses any larger n.
    """

    stages: tuple[CodecStage, ...]
    dim: int
    max_clients: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages or not isinstance(self.stages[-1], ModularWrap):
            raise CodecError("a pipeline's last stage must be a ModularWrap")
        object.__setattr__(self, "dim", check_int("dim", self.dim, 1))
        object.__setattr__(self, "max_clients", check_int("max_clients", self.max_clients, 1))

    @property
    def ring(self) -> Ring:
        """Z_(2^b), where the last stage wraps to."""
        wrap = self.stages[-1]
        assert isinstance(wrap, ModularWrap)
        return wrap.ring

    @property
    def bits(self) -> int:
        """b: the ring is Z_(2^b)."""
        return self.ring.bits

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> RingVector:
        """One device's update -> its ring vector of `dim` values."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        y = np.asarray(x)
        if y.shape != (self.dim,):
            raise CodecError(f"update of shape {y.shape}, the pipeline takes ({self.dim},)")
        if not np.all(np.isfinite(y)):
            raise CodecError("update holds non-finite values")
        for stage in self.stages:
            y = stage.encode(y, rng)
        return self.ring.check(y)

    def decode_sum(self, total: RingVector, n: int) -> Floats:
        """The sum mod 2^b of n encodings -> the (approximate) sum of the n clipped updates."""
        check_int("n", n, 1, self.max_clients)
        y: np.ndarray = self.ring.check(total, "sum")
        if y.shape != (self.dim,):
            raise CodecError(f"sum of shape {y.shape}, the pipeline makes ({self.dim},)")
        for stage in reversed(self.stages):
            y = stage.decode(y, n)
        return np.asarray(y, dtype=np.float64)


def build_pipeline(dim: int, *, clip: float, scale: float, bits: int, rotation_seed: bytes,
                   noise: Noise | None = None, wrap_prob: float | None = None,
                   conditional_beta: float | None = None) -> Pipeline:
    """The standard pipeline: clip, rotate, scale and round, noise, wrap into Z_(2^bits).

    `conditional_beta` makes the rounding conditional (`StochasticRounding`), as a
    distributed-DP noise stage needs; `privacy/calibrate.py` chooses all of these for DP.
    """
    noise = noise or NoNoise()
    stages: Sequence[CodecStage] = (
        L2Clip(clip), Rotation(dim, rotation_seed),
        StochasticRounding(scale, clip, conditional_beta), noise, ModularWrap(bits),
    )
    capacity = max_clients(bits, clip, scale, dim=dim, wrap_prob=wrap_prob, noise=noise)
    return Pipeline(tuple(stages), dim, capacity)

