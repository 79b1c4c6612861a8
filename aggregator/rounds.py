"""What a round is made of, decided from the configuration: its parameters and its task.

`plan_round` is the one place that turns a cohort into a signed round: SecAgg+'s k and t for
its size (`choose_parameters`, `[secagg]`), the ring's bits for it (`choose_bits`, `[codec]`),
fresh rotation and graph seeds, the training spec. `ModelSpec` is what the aggregator needs
of the bundle: its parameter layout, the initial weights and how a model is released.
Randomness is passed in per round (`Randomness`): cryptographic in production, seeded in
simulations so that a run can be replayed bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nacl.utils
import numpy as np

from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.optimizers import OptimizerState
from genofed.aggregator.privacy import PrivacyLedger, dpsgd_training, noisy_codec
from genofed.errors import LocalInputError
from genofed.models.layout import ParamLayout
from genofed.models.manifest import Bundle
from genofed.protocol.codec import CodecError, choose_bits
from genofed.protocol.privacyspec import PrivacySpent
from genofed.protocol.ring import Ring
from genofed.protocol.roundspec import CodecSpec
from genofed.protocol.schema import DataUse, ModelRelease, SecureTask
from genofed.protocol.secagg import (
    GraphSeed,
    IdentityKey,
    ParameterError,
    Participant,
    RoundConfig,
    SigningIdentity,
    choose_parameters,
)


@dataclass(frozen=True)
class RoundRandom:
    """One round's randomness: `rng` draws the cohort, `seed` makes 32-byte seeds."""

    rng: np.random.Generator
    seed: Callable[[], bytes]


Randomness = Callable[[int], RoundRandom]


def system_randomness(round_: int) -> RoundRandom:
    """Production: the cohort from a freshly seeded generator, seeds from the OS CSPRNG."""
    return RoundRandom(np.random.default_rng(), lambda: nacl.utils.random(32))


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """The model as the aggregator handles it: flat float32 weights in the bundle's layout
    (flatten order, pruning mask, quantization channels)."""

    layout: ParamLayout
    panel_sha256: str
    initial: np.ndarray

    @classmethod
    def of(cls, bundle: Bundle) -> ModelSpec:
        return cls(bundle.layout, bundle.panel_sha256,
                   bundle.layout.flatten(bundle.initial_params()))

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    @property
    def n_trained(self) -> int:
        """The coordinates that are trained and summed: a ring vector holds these."""
        return self.layout.n_trained

    def zero_pruned(self, weights: np.ndarray, state: OptimizerState) -> int:
        """Zero, in place, the pruned coordinates of `weights` and of the server optimizer's
        moments; returns how many weights were not zero."""
        pruned = ~self.layout.keep
        moved = int(np.count_nonzero(weights[pruned]))
        weights[pruned] = 0
        for moment in (state.m, state.v) if state.m.size else ():
            moment[pruned] = 0
        return moved

    def release(self, federation: str, version: int, weights: np.ndarray,
                identity: SigningIdentity, *, privacy: PrivacySpent | None = None) -> bytes:
        """Model `version` as it travels: INT8 per channel, signed, with what the rounds
        behind it spent of the privacy budget (DP federations)."""
        values, scales = self.layout.quantize(weights)
        return ModelRelease(federation, version, self.panel_sha256, values,
                            scales, privacy).seal(identity)


def plan_round(cfg: AggregatorConfig, number: int, model_version: int,
               cohort: Mapping[str, bytes], aggregator: IdentityKey, n_trained: int,
               random: RoundRandom, *, privacy: PrivacyLedger | None = None) -> SecureTask:
    """The open task of round `number` over `cohort` (device -> verify key, roster order);
    with a privacy ledger, its noise for what is left of the target (BudgetSpent if none
    is)."""
    n = len(cohort)
    declared, training = None, cfg.rounds.training()
    remaining = cfg.rounds.rounds - model_version
    try:
        params = choose_parameters(n, cfg.secagg.corrupt_fraction, cfg.secagg.dropout_fraction)
        if privacy is None or privacy.unit == "record":
            codec = CodecSpec(cfg.codec.clip, cfg.codec.scale,
                              choose_bits(n, cfg.codec.clip, cfg.codec.scale), random.seed())
        if privacy is not None and privacy.unit == "record":
            training, declared = dpsgd_training(privacy, training, clip=cfg.privacy.clip,
                                                sample_rate=cfg.privacy.sample_rate,
                                                remaining=remaining)
        elif privacy is not None:
            codec, declared = noisy_codec(privacy, clip=cfg.codec.clip, dim=n_trained, n=n,
                                          t=params.t, remaining=remaining,
                                          rotation_seed=random.seed())
    except (ParameterError, CodecError) as exc:
        raise LocalInputError(f"cannot set up a round of {n} devices: {exc}") from None
    bits = codec.bits
    secagg = RoundConfig(cfg.federation, number,
                         tuple(Participant(d, IdentityKey(k)) for d, k in cohort.items()),
                         aggregator, params, Ring(bits), n_trained, GraphSeed(random.seed()))
    return SecureTask(cfg.federation, number, "open", model_version,
                      deadline_s=cfg.rounds.stage_timeout_s, training=training,
                      codec=codec, secagg=secagg, use=DataUse(cfg.study.name, cfg.study.duo),
                      privacy=declared)
