"""A cross-device federation run fast: each device's update through the real codec (clip,
rotation, stochastic rounding, the noise stage, the wrap), the encodings summed in the ring
and decoded as the aggregator decodes them, FedAvg on the aggregator's float weights, and the
model released as devices receive it (INT8 per channel).

What it leaves out is SecAgg+ itself: the aggregator unmasks the ring sum of the survivors'
encodings, and the masks cancel exactly in that sum (tests/unit/test_secagg.py,
test_secure_round.py), so summing the encodings directly gives the aggregator the same ring
vector. Running 1,000 SecAgg+ clients through `aggregator/simulate.py` costs ~30 s a round;
this costs the devices' encodings only. `benchmarks/privacy_utility.py` runs one setting both
ways and reports how far apart they land.

The attacks (`privacy/attacks.py`) take what this returns: every released model (what any
device holds) and every decoded aggregate (what the aggregator holds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genofed.aggregator.optimizers import OptimizerState, ServerOptimizer, apply
from genofed.models.layout import ParamLayout
from genofed.privacy.calibrate import DpCodec, covering_codec
from genofed.privacy.rdp import (
    calibrate_skellam,
    poisson_subsampled_rdp,
    rdp_to_epsilon,
    skellam_rdp,
)
from genofed.protocol.codec import build_pipeline
from genofed.protocol.codec_mean import MeanPipeline
from genofed.protocol.codec_stages import NoNoise

if TYPE_CHECKING:
    from genofed.agent.trainer import StepTrainer

# (weights the device received, full layout; index of its genome; rng) -> its delta
LocalUpdate = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def local_delta(trainer: StepTrainer, w: np.ndarray, x: np.ndarray, y: np.ndarray, *,
                epochs: int, lr: float, rng: np.random.Generator,
                batch_size: int = 32) -> np.ndarray:
    """One device's local training from the model `w` on its genomes (x, y), through the
    bundle's step graph: its update, in float64 (each simulated federation's LocalUpdate)."""
    trainer.set_weights(w)
    trainer.train(x, y, epochs=epochs, batch_size=batch_size, lr=lr, rng=rng)
    return np.subtract(trainer.weights(), w, dtype=np.float64)


PipelineFor = Callable[[bytes], MeanPipeline]  # a round's rotation seed -> its codec


def plain_codec(dim: int, clip: float, scale: float, bits: int) -> PipelineFor:
    """The codec without noise (`NoNoise`): what genofed ran before DP. A DP round's is
    `privacy/calibrate.py`'s `DpCodec.pipeline`."""
    def pipeline(rotation_seed: bytes) -> MeanPipeline:
        return MeanPipeline(build_pipeline(dim, clip=clip, scale=scale, bits=bits,
                                           rotation_seed=rotation_seed, noise=NoNoise()))
    return pipeline


def secure_mean(pipe: MeanPipeline, updates: Sequence[np.ndarray],
                rng: np.random.Generator) -> np.ndarray:
    """The mean of the devices' clipped updates as the aggregator decodes it from the ring sum
    of their encodings (which is what unmasking the SecAgg+ sum gives it)."""
    ring = pipe.pipeline.ring
    total = ring.sum(pipe.encode(np.asarray(u, np.float64), rng) for u in updates)
    return pipe.decode_mean(total, len(updates))


@dataclass
class FederationRun:
    """`released[r]`: the model devices hold after r rounds (0: the initial model), as
    released (INT8 per channel, dequantized); `aggregates[r]`: round r's decoded mean update
    (full layout, pruned coordinates 0); `weights`: the aggregator's float model at the end."""

    released: list[np.ndarray]
    aggregates: list[np.ndarray]
    weights: np.ndarray


def release(layout: ParamLayout, weights: np.ndarray) -> np.ndarray:
    """The model as a device receives it: quantized to INT8 per channel and back."""
    return layout.dequantize(*layout.quantize(np.asarray(weights, np.float32)))


def run_federation(layout: ParamLayout, initial: np.ndarray, cohorts: Sequence[Sequence[int]],
                   local_update: LocalUpdate, codec: PipelineFor, *,
                   server: ServerOptimizer | None = None, seed: int = 0) -> FederationRun:
    """len(cohorts) rounds of the server optimizer (default FedAvg at lr 1) as the aggregator
    applies it (`aggregator/optimizers.py`); round r's devices are the genomes `cohorts[r]`
    (one genome a device). Deterministic in `seed` (rotation seeds, rounding, noise,
    training)."""
    server = server or ServerOptimizer()
    state = OptimizerState()
    w = np.asarray(initial, np.float32).copy()
    released = [release(layout, w)]
    aggregates = []
    for r, cohort in enumerate(cohorts):
        rng = np.random.default_rng([seed, r])
        pipe = codec(hashlib.sha256(f"rotation/{seed}/{r}".encode()).digest())
        model = released[-1]
        updates = [layout.trained(local_update(model, int(i), rng)) for i in cohort]
        mean = layout.expand(secure_mean(pipe, updates, rng))
        aggregates.append(mean)
        w = apply(server, w, mean, state)
        released.append(release(layout, w))
    return FederationRun(released, aggregates, w)


def first_aggregates(layout: ParamLayout, initial: np.ndarray,
                     cohorts: Sequence[Sequence[int]], local_update: LocalUpdate,
                     codec: PipelineFor, *, server: ServerOptimizer | None = None,
                     seed: int = 0) -> list[np.ndarray]:
    """Round 0's released model minus the initial one (what every device of a federation holds
    after one round) for each of the shadow federations `cohorts` (one round each)."""
    out = []
    for k, cohort in enumerate(cohorts):
        run = run_federation(layout, initial, [cohort], local_update, codec,
                             server=server, seed=seed * 1000 + k)
        out.append(run.released[1] - run.released[0])
    return out


def dp_codec(epsilon: float, delta: float, *, rounds: int, dim: int, clip: float, n: int,
             sample_rate: float | None = None, max_bits: int = 18) -> DpCodec:
    """The DP codec (`privacy/calibrate.py`) of rounds of n devices, noised so that a device
    spends at most `epsilon` at `delta` (Skellam RDP, `privacy/rdp.py`): without
    `sample_rate`, over the `rounds` it takes part in, no amplification assumed; with it, over
    `rounds` rounds whose cohorts are Poisson samples at that rate, drawn secretly. The
    sensitivity depends on the scale, and the scale on the noise it must leave room for, so
    the noise multiplier is raised until the codec it gives meets the target."""
    return covering_codec(lambda c: calibrate_skellam(epsilon, delta, rounds=rounds, l2=c.l2,
                                                      l1=c.l1, sample_rate=sample_rate),
                          dim=dim, clip=clip, n_max=n, n_min=n, max_bits=max_bits)


def device_epsilon(codec: DpCodec, delta: float, *, participations: int, rounds: int,
                   sample_rate: float) -> tuple[float, float]:
    """(unamplified, amplified) epsilon of one device: composed over the `participations`
    rounds it took part in; and, if the cohorts of all `rounds` were Poisson samples at
    `sample_rate` drawn secretly, amplified over all of them."""
    per_round = skellam_rdp(l2=codec.l2, l1=codec.l1, variance=codec.n_min * codec.variance)
    plain = rdp_to_epsilon(participations * per_round, delta)[0]
    amplified = rdp_to_epsilon(rounds * poisson_subsampled_rdp(per_round, sample_rate),
                               delta)[0]
    return plain, amplified
