"""The codec of a secure round: the equal-weight mean of the survivors' clipped updates, and
the check that their sum is one such updates can make (`MeanPipeline`).

Equal weights (`MeanPipeline`)
------------------------------
Every survivor's clipped update counts 1/n; no weight and no sample count travels, masked or
in the clear. Weighting by example counts was the alternative, and each way of doing it costs
more than the test AUC equal weights lose (`genofed bench weighting`: nothing on the demo,
whose devices are the same size; 0.008-0.009 after 8 rounds and 0.002-0.004 after 20 where
devices hold 1000 down to 25 samples, 0.019 in the worst of six such cohorts):
- a weight inside the ring (the earlier codec: one more coordinate holding w = min(n_i, W_max))
  is masked like the rest, so no one can check it: a device wrote -993 there beside honest
  weights, the total passed the only check possible (n <= W <= n W_max) and the mean came out
  143 times too large; and the total W was revealed each round, so two rounds whose cohorts
  differ by one device gave the aggregator that device's count exactly;
- a weight declared in the clear and signed (or a bucket of it, e.g. its power of two) can be
  bounded by the task, but hands the aggregator every device's count (or its bucket) every
  round, and a device can still claim the cap: its vote stays W_max / W, not 1/n;
- equal weights leak nothing, leave a device nothing to inflate, and bound what one honest
  device adds to the mean by C/n, the per-device sensitivity a distributed-DP noise stage
  needs (a data-dependent denominator would have to be noised too).

The aggregate check (`MeanPipeline.check_sum`)
----------------------------------------------
Before the sum is decoded, its norm is compared with what n clipped updates can make. With
q_i = SR(s R u_i) and ||u_i|| <= C, each rounded coordinate lies within 1 of its unrounded
value (the clamp only moves it towards 0), so ||q_i|| <= s*C + sqrt(d); the noise adds at most
H(n) to each coordinate; so the signed sum (in the rotated domain, where it is integer and
exact) obeys

    ||sum_i q_i + noise||_2 <= n * (s*C + sqrt(d)) + sqrt(d) * H(n)

With conditional rounding (distributed-DP rounds), each q_i is redrawn until ||q_i|| <= B,
B^2 = (sC)^2 + d/4 + sqrt(2 ln(1/beta)) (sC + sqrt(d)/2) (`codec_stages.rounding_norm_bound`),
and n*B replaces n*(s*C + sqrt(d)): the same argument, a tighter per-device term. A noise
stage with a `norm_headroom(n)` (a tail bound on its summed vector's L2 norm, as Skellam's in
`privacy/noise.py`) replaces sqrt(d) H(n) by it when smaller: six times smaller at d = 2000,
which leaves a poisoner that much less room. Unbounded noise makes the check probabilistic:
an honest sum fails it with at most the stage's stated probability (2^-39 for Skellam).

and the decoded mean ||mean||_2 <= C + sqrt(d)/s + sqrt(d)*H(n)/(n*s). A relative 1e-9 covers
float error in the clip and the rotation. Honest inputs never fail it (it is attained when n
updates of norm C point one way); a sum that fails it holds an input that was not a clipped
update (a skipped clip, crafted ring values, a device scaling its own update), and the round
aborts with `SumRejected`. What it cannot do: under SecAgg+ no single input is ever seen, so
the bound is on the sum, not on each device. A device that knows the bound can send any vector
that keeps the sum inside it, and so can place the mean anywhere in the ball of radius C: up to
2C from the honest mean, where one honest device moves it by at most C/n. Per-device bounds
need per-device proofs (range proofs on commitments, as RoFL and ACORN do). The masks leave no
per-device information to check: each masked input is uniform in the ring to the aggregator,
and a device's unmasked contribution never exists apart from the sum. The closer C is set
above the honest updates' norms, the less room is left (`genofed bench poisoning`: at the
demo's C = 10, ~70 times its updates' norms, one device inside the bound turns the demo's
model around in one round, test AUC 0.863 to 0.137; at C = 0.25, 0.863 to 0.857).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np

from genofed.errors import MessageError
from genofed.protocol.codec import CodecError, Pipeline
from genofed.protocol.codec_stages import (
    Floats,
    L2Clip,
    Noise,
    NoNoise,
    StochasticRounding,
    check_beta,
    check_int,
    check_positive,
    rounding_norm_bound,
)
from genofed.protocol.ring import RingVector

# Float error of the clip and the rotation in the aggregate check: ~log2(d) ulps of a norm.
RELATIVE_SLACK = 1e-9


def sum_norm_bound(n: int, clip: float, scale: float, dim: int, *,
                   noise: Noise | None = None, conditional_beta: float | None = None) -> float:
    """The largest L2 norm that a sum of n encodings can have in the ring, before the inverse
    rotation and the scale (see the aggregate check above); `conditional_beta` as the
    rounding stage's, whose per-device bound it then uses."""
    check_int("n", n, 1)
    clip, scale = check_positive("clip", clip), check_positive("scale", scale)
    root_d = math.sqrt(check_int("dim", dim, 1))
    per_device = rounding_norm_bound(scale * clip, dim, check_beta(conditional_beta))
    noise = noise or NoNoise()
    noise_norm = root_d * noise.headroom(n)
    norm_headroom = getattr(noise, "norm_headroom", None)  # an L2 tail bound, if it has one
    if norm_headroom is not None:
        noise_norm = min(noise_norm, float(norm_headroom(n)))
    bound = n * per_device + noise_norm
    return bound * (1 + RELATIVE_SLACK)


class SumRejected(MessageError):
    """The survivors' sum is not one that their clipped updates can make: a survivor sent
    something else (a poisoned or broken input). `check` names the check that failed, for the
    metric; the round's inputs are thrown away."""

    def __init__(self, check: str, text: str) -> None:
        super().__init__(text)
        self.check = check


@dataclass(frozen=True)
class MeanPipeline:
    """A secure round's codec: each device's clipped update counts equally (see "Equal
    weights" above), and the survivors' sum is checked before it becomes their mean.

    The pipeline must start with an L2Clip and hold one StochasticRounding; its noise stage,
    if any, is the one with a `headroom`.
    """

    pipeline: Pipeline

    def __post_init__(self) -> None:
        stages = self.pipeline.stages
        if not isinstance(stages[0], L2Clip):
            raise CodecError("a mean pipeline's first stage must be an L2Clip")
        rounding = [s for s in stages if isinstance(s, StochasticRounding)]
        if len(rounding) != 1:
            raise CodecError("a mean pipeline needs exactly one StochasticRounding stage")

    @property
    def dim(self) -> int:
        """Ring values per device: the update's coordinates."""
        return self.pipeline.dim

    @property
    def max_clients(self) -> int:
        return self.pipeline.max_clients

    @property
    def clip(self) -> float:
        """C: the largest L2 norm of one device's update, and of the mean."""
        stage = self.pipeline.stages[0]
        assert isinstance(stage, L2Clip)
        return stage.clip

    @property
    def rounding(self) -> StochasticRounding:
        """The pipeline's rounding stage."""
        return next(s for s in self.pipeline.stages if isinstance(s, StochasticRounding))

    @property
    def scale(self) -> float:
        return self.rounding.scale

    @property
    def noise(self) -> Noise | None:
        """The noise stage (the one with a `headroom`), if any."""
        stage = next((s for s in self.pipeline.stages if hasattr(s, "headroom")), None)
        return cast(Noise | None, stage)

    def norm_bound(self, n: int) -> float:
        """The largest L2 norm of an honest sum of n encodings, in ring units."""
        return sum_norm_bound(n, self.clip, self.scale, self.dim, noise=self.noise,
                              conditional_beta=self.rounding.conditional_beta)

    def encode(self, delta: np.ndarray, rng: np.random.Generator) -> RingVector:
        """One device's update -> its ring vector of `dim` values (clipped to C first)."""
        return self.pipeline.encode(delta, rng)

    def check_sum(self, total: RingVector, n: int) -> float:
        """The L2 norm of the sum of n encodings (ring units); SumRejected if n clipped updates
        cannot make it, CodecError if it is not a sum of this pipeline's ring at all."""
        check_int("n", n, 1, self.max_clients)
        y = self.pipeline.ring.check(total, "sum")
        if y.shape != (self.dim,):
            raise CodecError(f"sum of shape {y.shape}, the pipeline makes ({self.dim},)")
        norm = float(np.linalg.norm(self.pipeline.ring.unwrap(y).astype(np.float64)))
        bound = self.norm_bound(n)
        if not norm <= bound:
            s = self.scale
            raise SumRejected(
                "aggregate_norm",
                f"the mean of the {n} survivors' updates has L2 norm {norm / (n * s):.6g}, more "
                f"than the {bound / (n * s):.6g} that updates clipped to {self.clip:g} can "
                f"make: a survivor's input was not a clipped update")
        return norm

    def decode_mean(self, total: RingVector, n: int) -> Floats:
        """The ring sum of n survivors' encodings -> the mean of their clipped updates, after
        the aggregate check (SumRejected if it fails)."""
        self.check_sum(total, n)
        return self.pipeline.decode_sum(total, n) / n
