"""One builder for the signed task of an open secure round, for tests that drive rounds or
devices in memory (the aggregator service makes real ones in `aggregator/service.py`)."""

from __future__ import annotations

from collections.abc import Mapping

from genofed.protocol.ring import Ring
from genofed.protocol.roundspec import CodecSpec, TrainingSpec
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import (
    GraphSeed,
    IdentityKey,
    Participant,
    RoundConfig,
    SecAggParams,
    choose_parameters,
)

CODEC = CodecSpec(clip=10.0, scale=1e6, bits=32, weight_max=1000, rotation_seed=b"r" * 32)


def open_task(federation: str, round_: int, roster: Mapping[str, IdentityKey],
              aggregator: IdentityKey, length: int, *, model_version: int = 0,
              codec: CodecSpec = CODEC, training: TrainingSpec | None = None,
              params: SecAggParams | None = None) -> SecureTask:
    """Round `round_` over `roster` (device -> identity key) with ring vectors of `length`
    values (the update plus the weight slot) in `codec.bits`; k and t as the aggregator would
    choose them unless `params` says."""
    config = RoundConfig(federation, round_,
                         tuple(Participant(d, k) for d, k in roster.items()), aggregator,
                         params or choose_parameters(len(roster), 0.1, 0.3), Ring(codec.bits),
                         length, GraphSeed(b"g" * 32))
    return SecureTask(federation, round_, "open", model_version, codec=codec,
                      training=training or TrainingSpec(), secagg=config)
