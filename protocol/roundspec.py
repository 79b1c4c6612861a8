"""What a secure round's task tells every device, as JSON inside the aggregator's signed task.

Three parts: the training a device does (`TrainingSpec`), how it encodes its update into the
ring (`CodecSpec`, with the round's rotation seed), and the SecAgg+ round configuration
(`protocol.secagg.RoundConfig`: roster, aggregator key, n, k, t, ring, length, graph seed).
Every value is checked on the way in, and a device recomputes the configuration's digest from
these fields, so two parties that disagree on any of them cannot complete a round together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from genofed.errors import LocalInputError, MessageError
from genofed.models.manifest import OPTIMIZERS
from genofed.protocol.codec import build_pipeline
from genofed.protocol.codec_mean import MeanPipeline
from genofed.protocol.fields import Fields, hex_value, text_value
from genofed.protocol.privacyspec import DpSgd
from genofed.protocol.ring import Ring
from genofed.protocol.secagg import (
    GraphSeed,
    IdentityKey,
    Participant,
    RoundConfig,
    SecAggParams,
)
from genofed.protocol.secagg.messages import MAX_CLIENTS


@dataclass(frozen=True)
class TrainingSpec:
    """The local training of one round: `optimizer` names the bundle's step graph (one of
    `models.manifest.OPTIMIZERS`); each device starts it at zero state every round. With
    `dpsgd` (record-level DP, cross-silo), the device trains through the bundle's DP-SGD
    step instead, `dpsgd.steps_for_epochs(local_epochs)` steps on Poisson-sampled batches
    (`batch_size` is then unused: a batch is each record with probability q)."""

    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    dpsgd: DpSgd | None = None

    @property
    def dpsgd_steps(self) -> int:
        """The DP-SGD steps a round takes (0 without DP-SGD)."""
        return 0 if self.dpsgd is None else self.dpsgd.steps_for_epochs(self.local_epochs)

    def to_json(self) -> dict[str, Any]:
        return {"local_epochs": self.local_epochs, "batch_size": self.batch_size,
                "lr": self.lr, "optimizer": self.optimizer,
                "dpsgd": None if self.dpsgd is None else self.dpsgd.to_json()}

    @classmethod
    def from_json(cls, f: Fields) -> TrainingSpec:
        """The training a task asks for; MessageError on anything malformed."""
        try:
            return cls(local_epochs=f.integer("local_epochs", 1, 10_000),
                       batch_size=f.integer("batch_size", 1, 1 << 24), lr=f.number("lr"),
                       # a task from before optimizers were named trains with plain SGD
                       optimizer=f.text("optimizer", 32) if "optimizer" in f.doc else "sgd",
                       dpsgd=DpSgd.from_json(f.doc["dpsgd"]) if f.has("dpsgd") else None)
        except (MessageError, LocalInputError) as exc:
            raise MessageError(f"bad training spec: {exc}") from None

    def __post_init__(self) -> None:
        if self.local_epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise LocalInputError("training needs local_epochs >= 1, batch_size >= 1 and lr > 0")
        if self.optimizer not in OPTIMIZERS:
            raise LocalInputError(f"training optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")


@dataclass(frozen=True)
class CodecSpec:
    """How a device's update becomes ring values (see `protocol/codec.py`); every device's
    update counts equally (`protocol/codec_mean.py` says why), so no weight is part of it.

    Distributed DP (`protocol/privacyspec.py`): `noise_variance` > 0 is the Skellam noise each
    device adds per coordinate (`privacy/noise.py`), `conditional_beta` makes the rounding
    conditional so that the sensitivity is what the privacy declaration says, and
    `wrap_prob` is the probability the ring's bit rule allows a wrap (`codec.choose_bits`)."""

    clip: float
    scale: float
    bits: int
    rotation_seed: bytes
    noise_variance: float = 0.0
    noise_min_clients: int = 1  # decode refuses a sum of fewer (the calibration's survivors)
    conditional_beta: float | None = None
    wrap_prob: float | None = None

    def __post_init__(self) -> None:
        if len(self.rotation_seed) != 32:
            raise LocalInputError("rotation_seed must be 32 bytes")
        if not (self.noise_variance >= 0 and self.noise_variance < 1e30):
            raise LocalInputError(f"noise_variance must be in [0, 1e30), got "
                                  f"{self.noise_variance!r}")

    def pipeline(self, dim: int) -> MeanPipeline:
        """The round's pipeline for `dim` model coordinates (`dim` ring values)."""
        noise = None
        if self.noise_variance > 0:
            from genofed.privacy.noise import SkellamNoise

            noise = SkellamNoise(self.noise_variance, dim, self.noise_min_clients)
        return MeanPipeline(build_pipeline(dim, clip=self.clip, scale=self.scale,
                                           bits=self.bits, rotation_seed=self.rotation_seed,
                                           noise=noise, wrap_prob=self.wrap_prob,
                                           conditional_beta=self.conditional_beta))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rotation_seed": self.rotation_seed.hex()}

    @classmethod
    def from_json(cls, f: Fields) -> CodecSpec:
        """The codec a task carries; MessageError on anything malformed."""
        def optional(key: str) -> float | None:
            return f.number(key) if f.has(key) else None

        try:
            return cls(clip=f.number("clip"), scale=f.number("scale"),
                       bits=f.integer("bits", 1, 64), rotation_seed=f.hex("rotation_seed", 32),
                       noise_variance=optional("noise_variance") or 0.0,
                       noise_min_clients=f.integer("noise_min_clients", 1)
                       if f.has("noise_min_clients") else 1,
                       conditional_beta=optional("conditional_beta"),
                       wrap_prob=optional("wrap_prob"))
        except (MessageError, LocalInputError) as exc:
            raise MessageError(f"bad codec spec: {exc}") from None


def config_to_json(cfg: RoundConfig) -> dict[str, Any]:
    """A round configuration as plain JSON values."""
    return {"federation": cfg.federation, "round": cfg.round,
            "roster": [[p.device, p.identity.raw.hex()] for p in cfg.roster],
            "server": cfg.server.raw.hex(), "n": cfg.params.n, "k": cfg.params.k,
            "t": cfg.params.t, "bits": cfg.ring.bits, "length": cfg.length,
            "graph_seed": cfg.graph_seed.raw.hex()}


def config_from_json(f: Fields) -> RoundConfig:
    """The round configuration a task carries; MessageError on anything malformed."""
    try:
        # One pass, no Fields object per member: a device parses a roster of every member of
        # its round (1,000 at the scale benchmark) in each task it takes.
        roster = []
        for i, entry in enumerate(f.array("roster", MAX_CLIENTS)):
            pair = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
            device, key = text_value(pair[0], 64), hex_value(pair[1], 32)
            if device is None or key is None:
                raise MessageError(f"roster entry {i} is not [device (a string of at most 64 "
                                   f"characters), key (32 bytes in hex)]: {entry!r:.100}")
            roster.append(Participant(device, IdentityKey(key)))
        return RoundConfig(
            federation=f.text("federation", 64), round=f.integer("round"),
            roster=tuple(roster), server=IdentityKey(f.hex("server", 32)),
            params=SecAggParams(f.integer("n", 1, MAX_CLIENTS), f.integer("k", 0, MAX_CLIENTS),
                                f.integer("t", 0, MAX_CLIENTS)),
            ring=Ring(f.integer("bits", 1, 64)), length=f.integer("length", 1),
            graph_seed=GraphSeed(f.hex("graph_seed", 32)))
    except (MessageError, LocalInputError) as exc:  # ParameterError, RingError too
        raise MessageError(f"bad round configuration: {exc}") from None
