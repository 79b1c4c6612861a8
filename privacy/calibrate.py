"""The rule that picks a distributed-DP round's scale, bits and per-device noise (`DpCodec`).

Given the update length d, the clip C, the round's largest and smallest accepted cohorts
(n_max devices invited, n_min survivors at least) and a noise multiplier z:

1. Sensitivity. Rounding is conditional (`StochasticRounding(conditional_beta=beta)`, Kairouz,
   Liu, Steinke 2021, beta = e^-0.5 as there and in TFF), so one device's vector in the ring
   has L2 norm <= l2 = B, B^2 = (sC)^2 + d/4 + sqrt(2 ln(1/beta)) (sC + sqrt(d)/2), and L1
   norm <= l1 = min(sqrt(d) l2, l2^2) (`encoded_sensitivity`). These are for adding or removing
   one device (user-level DP); replacing one doubles them.
2. Noise. Each device adds Skellam(v) per coordinate with v = z^2 l2^2 / n_min, so the sum of
   any m >= n_min survivors carries Skellam(m v), standard deviation >= z l2 per coordinate
   at every accepted dropout count. A sum of fewer than n_min is refused by the noise stage.
3. Ring. A DP round uses the probabilistic rule (`codec.sum_bound` with `wrap_prob`) plus the
   noise's tail headroom:  2^(b-1) - 1 >= ceil(s n_max C tau) + 1 + n_max + H(n_max), where
   tau bounds the rotated sum's coordinates (Hoeffding over the rotation, failing with
   probability <= wrap_prob = 2^-40) and H is the Skellam Chernoff tail over the d coordinates
   (failing with probability <= 2^-40): the sum wraps with probability <= 2^-39 per round.
   Why not the default worst-case rule: the noise is unbounded, so a DP round's wrap is
   probabilistic whatever the rule; and the worst case costs the privacy it is there for: at
   n = 1000 (n_min 800) and 18 bits it allows sC <= 129, where conditional rounding still
   inflates the sensitivity by 1.9% at d = 2000 (plain rounding: 35%) and the rounding error
   is 1/70 of the noise's variance; this rule gives sC = 473 at 18 bits (inflation 0.2%).
   The probabilistic rule's caveat (`codec.py`) stands: it holds for updates that do not
   depend on the rotation seed.
4. Scale. For a ring width b, the largest s that satisfies 3 (every term grows with s; found by
   bisection). A larger scale only helps: the inflation l2/(sC) - 1 ~ (d/4 + sC)/(2 (sC)^2)
   and the rounding error (variance <= n/4 per coordinate, against the noise's z^2 l2^2)
   shrink. This is TFF's heuristic (`DistributedDpSumFactory`: the largest scale that keeps k
   standard deviations of the noisy aggregate inside 2^b), with its sub-Gaussian k-sigma
   replaced by the two tail bounds of 3 at stated failure probabilities.
5. Bits. Given, or the smallest b <= max_bits whose scale brings the inflation within
   max_inflation (default 1%): past that, more bits cost upload and buy neither privacy nor
   accuracy worth having. If no b <= max_bits reaches it, max_bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from genofed.errors import LocalInputError, MessageError
from genofed.privacy.noise import DEFAULT_FAIL_PROB, SkellamNoise
from genofed.privacy.poisson import MAX_LAMBDA
from genofed.protocol.codec import build_pipeline, sum_bound
from genofed.protocol.codec_mean import MeanPipeline
from genofed.protocol.codec_stages import (
    MAX_SCALED,
    CodecError,
    check_beta,
    check_int,
    check_positive,
    encoded_sensitivity,
)
from genofed.protocol.fields import Fields
from genofed.protocol.ring import MAX_BITS

DEFAULT_BETA = math.exp(-0.5)
DEFAULT_MAX_INFLATION = 0.01


def per_device_variance(l2: float, noise_multiplier: float, n_min: int) -> float:
    """The smallest float v with n_min * v >= (z l2)^2."""
    need = (noise_multiplier * l2) ** 2
    v = need / n_min
    while n_min * v < need:
        v = math.nextafter(v, math.inf)
    return v


@dataclass(frozen=True)
class DpCodec:
    """A distributed-DP round's codec parameters, every one a plain number (a signed task can
    carry them; `to_json`/`from_json`). `l2`, `l1` (ring units) and `variance` (per device)
    are derived and checked on construction, as is that the ring holds n_max devices."""

    dim: int
    clip: float
    scale: float
    bits: int
    n_max: int
    n_min: int
    noise_multiplier: float
    variance: float
    l2: float
    l1: float
    conditional_beta: float = DEFAULT_BETA
    wrap_prob: float = DEFAULT_FAIL_PROB
    noise_fail_prob: float = DEFAULT_FAIL_PROB

    def __post_init__(self) -> None:
        check_int("dim", self.dim, 1)
        check_int("bits", self.bits, 2, MAX_BITS)
        check_int("n_min", self.n_min, 1)
        check_int("n_max", self.n_max, self.n_min)
        check_positive("noise_multiplier", self.noise_multiplier)
        check_beta(self.conditional_beta)
        for name in ("wrap_prob", "noise_fail_prob"):
            if not 0 < getattr(self, name) < 1:
                raise CodecError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        l2, l1 = encoded_sensitivity(self.clip, self.scale, self.dim,
                                     conditional_beta=self.conditional_beta)
        if not (math.isclose(self.l2, l2, rel_tol=1e-12)
                and math.isclose(self.l1, l1, rel_tol=1e-12)):
            raise CodecError(f"DP codec sensitivity (l2={self.l2!r}, l1={self.l1!r}) is not "
                             f"the (l2={l2!r}, l1={l1!r}) of its clip, scale and dim")
        if not self.n_min * self.variance >= (self.noise_multiplier * self.l2) ** 2:
            raise CodecError(f"DP codec noise variance {self.variance!r} per device gives "
                             f"{self.n_min} survivors less than (z l2)^2 = "
                             f"{(self.noise_multiplier * self.l2) ** 2!r}")
        top = (1 << (self.bits - 1)) - 1
        need = sum_bound(self.n_max, self.clip, self.scale, dim=self.dim,
                         wrap_prob=self.wrap_prob, noise=self.noise())
        if need > top:
            raise CodecError(f"{self.n_max} devices need coordinates up to {need}; "
                             f"{self.bits} bits hold {top}")

    @property
    def inflation(self) -> float:
        """l2 / (s C): how much rounding inflates the sensitivity (1 is none)."""
        return self.l2 / (self.scale * self.clip)

    def covers(self, n: int) -> bool:
        """n survivors' sum carries at least the noise the accountant assumes."""
        return self.n_min <= n <= self.n_max

    def stddev(self, n: int) -> float:
        """The standard deviation of n survivors' summed noise, per coordinate (ring units)."""
        return math.sqrt(n * self.variance)

    def tv_bound(self, n: int) -> float:
        """Total variation between n devices' sampled noise and exact Skellam (add it to
        delta, times 1 + e^eps: `privacy/poisson.py`)."""
        return n * self.noise().tv_bound

    def noise(self) -> SkellamNoise:
        """The codec's noise stage."""
        return SkellamNoise(self.variance, self.dim, self.n_min, self.noise_fail_prob)

    def pipeline(self, rotation_seed: bytes) -> MeanPipeline:
        """The round's mean pipeline: clip, rotate, conditional rounding, Skellam, wrap."""
        return MeanPipeline(build_pipeline(
            self.dim, clip=self.clip, scale=self.scale, bits=self.bits,
            rotation_seed=rotation_seed, noise=self.noise(), wrap_prob=self.wrap_prob,
            conditional_beta=self.conditional_beta))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, f: Fields) -> DpCodec:
        """The DP codec a task carries; MessageError on anything malformed or inconsistent."""
        try:
            ints = {k: f.integer(k, 1) for k in ("dim", "bits", "n_max", "n_min")}
            nums = {k: f.number(k) for k in (
                "clip", "scale", "noise_multiplier", "variance", "l2", "l1",
                "conditional_beta", "wrap_prob", "noise_fail_prob")}
            return cls(**ints, **nums)  # type: ignore[arg-type]
        except (MessageError, LocalInputError) as exc:
            raise MessageError(f"bad DP codec: {exc}") from None


def _candidate(dim: int, clip: float, scale: float, bits: int, n_max: int, n_min: int,
               z: float, beta: float, wrap_prob: float, fail_prob: float) -> DpCodec | None:
    """The DP codec at this scale and width, or None if the ring cannot hold it (or the noise
    it needs is beyond the sampler's table)."""
    l2, l1 = encoded_sensitivity(clip, scale, dim, conditional_beta=beta)
    variance = per_device_variance(l2, z, n_min)
    if variance / 2 > MAX_LAMBDA:
        return None
    noise = SkellamNoise(variance, dim, n_min, fail_prob)
    if sum_bound(n_max, clip, scale, dim=dim, wrap_prob=wrap_prob, noise=noise) \
            > (1 << (bits - 1)) - 1:
        return None
    return DpCodec(dim, clip, scale, bits, n_max, n_min, z, variance, l2, l1, beta,
                   wrap_prob, fail_prob)


def largest_scale(bits: int, **kw: Any) -> DpCodec | None:
    """Rule 4: the DP codec of the largest scale that fits `bits` (relative precision 1e-12),
    or None if even a vanishing scale does not fit (the noise alone needs more bits)."""
    clip = kw["clip"]
    lo, hi = 1e-9 / clip, float((1 << (bits - 1)) / clip)
    if _candidate(scale=lo, bits=bits, **kw) is None:
        return None
    while hi * clip < MAX_SCALED and _candidate(scale=hi, bits=bits, **kw) is not None:
        lo, hi = hi, 2 * hi
    while hi / lo > 1 + 1e-12:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if _candidate(scale=mid, bits=bits, **kw) is not None else (lo, mid)
    return _candidate(scale=lo, bits=bits, **kw)


def choose_dp_codec(dim: int, clip: float, n_max: int, n_min: int, noise_multiplier: float, *,
                    max_bits: int = 18, bits: int | None = None,
                    max_inflation: float = DEFAULT_MAX_INFLATION,
                    conditional_beta: float = DEFAULT_BETA,
                    wrap_prob: float = DEFAULT_FAIL_PROB,
                    noise_fail_prob: float = DEFAULT_FAIL_PROB) -> DpCodec:
    """Scale, bits and per-device noise for a round of n_min..n_max survivors whose summed
    noise has standard deviation >= noise_multiplier * l2 (the module docstring's rule);
    CodecError naming the constraint that cannot be met."""
    check_int("dim", dim, 1)
    check_positive("clip", clip)
    check_int("n_min", n_min, 1)
    check_int("n_max", n_max, n_min)
    check_positive("noise_multiplier", noise_multiplier)
    check_int("max_bits", max_bits, 2, MAX_BITS)
    check_positive("max_inflation", max_inflation)
    kw = dict(dim=dim, clip=float(clip), n_max=n_max, n_min=n_min, z=float(noise_multiplier),
              beta=conditional_beta, wrap_prob=wrap_prob, fail_prob=noise_fail_prob)
    if bits is not None:
        check_int("bits", bits, 2, MAX_BITS)
        widths = [bits]
    else:
        widths = list(range(2, max_bits + 1))
    best = None
    for b in widths:
        best = largest_scale(b, **kw)
        if best is not None and best.inflation <= 1 + max_inflation:
            return best
    if best is None:
        raise CodecError(f"{n_max} devices of dim {dim} at noise multiplier "
                         f"{noise_multiplier:g} do not fit in {widths[-1]} bits at any scale")
    return best


def covering_codec(need: Callable[[DpCodec], float], *, dim: int, clip: float, n_max: int,
                   n_min: int, noise_multiplier: float = 0.05, max_bits: int = 18) -> DpCodec:
    """The DP codec whose n_min survivors' noise covers `need(codec)`, the summed variance an
    accountant asks for at that codec's sensitivity. The sensitivity depends on the scale and
    the scale on the noise it must leave room for, so the noise multiplier is raised until
    the rule's codec carries what is needed (each turn lowers the scale a little; the fixed
    point is approached from above). LocalInputError if it does not settle."""
    z = noise_multiplier
    for _ in range(50):
        codec = choose_dp_codec(dim, clip, n_max, n_min, z, max_bits=max_bits)
        variance = need(codec)
        if n_min * codec.variance >= variance:
            return codec
        z = max(z * 1.000001, math.sqrt(variance) / codec.l2)
    raise LocalInputError(f"no DP codec settles on the noise asked for {n_min}..{n_max} "
                          f"devices")
