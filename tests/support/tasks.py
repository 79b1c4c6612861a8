"""Builders for the signed task of an open secure round, for tests that drive rounds or
devices in memory (the aggregator makes real ones with `aggregator/rounds.py`)."""

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
    SigningIdentity,
    choose_parameters,
)

CODEC = CodecSpec(clip=10.0, scale=1e6, bits=32, rotation_seed=b"r" * 32)


def open_task(federation: str, round_: int, roster: Mapping[str, IdentityKey],
              aggregator: IdentityKey, length: int, *, model_version: int = 0,
              codec: CodecSpec = CODEC, training: TrainingSpec | None = None,
              params: SecAggParams | None = None) -> SecureTask:
    """Round `round_` over `roster` (device -> identity key) with ring vectors of `length`
    values (the update's coordinates) in `codec.bits`; k and t as the aggregator would
    choose them unless `params` says."""
    config = RoundConfig(federation, round_,
                         tuple(Participant(d, k) for d, k in roster.items()), aggregator,
                         params or choose_parameters(len(roster), 0.1, 0.3), Ring(codec.bits),
                         length, GraphSeed(b"g" * 32))
    return SecureTask(federation, round_, "open", model_version, codec=codec,
                      training=training or TrainingSpec(), secagg=config)


DIM = 40  # model coordinates of `round_setup`'s round, and the length of its ring vectors


def round_setup(n: int = 10, dropout: float = 0.3) -> tuple[SecureTask, SigningIdentity,
                                                            dict[str, SigningIdentity]]:
    """Round 3 of federation "fed" over n fresh devices dev00, dev01, ...: the task as the
    devices read it (sealed by a fresh aggregator identity, opened and checked), the
    aggregator's identity and the devices'."""
    agg = SigningIdentity.generate()
    ids = {f"dev{i:02d}": SigningIdentity.generate() for i in range(n)}
    codec = CodecSpec(clip=5.0, scale=2000.0, bits=32, rotation_seed=bytes(range(32)))
    task = open_task("fed", 3, {d: k.public for d, k in ids.items()}, agg.public, DIM,
                     model_version=2, codec=codec, training=TrainingSpec(2, 16, 0.05),
                     params=choose_parameters(n, 0.1, dropout))
    travelled = SecureTask.open(task.seal(agg), agg.public, "fed")
    assert travelled == task
    return travelled, agg, ids
