"""The differential privacy a round's signed task declares, and the device's check of it.

Cross-silo rounds are record-level DP (the unit is a genome of a clinic's cohort): the
training spec's DP-SGD (`DpSgd`: clip, noise multiplier, Poisson sample rate) runs on each
device, and the declaration's sensitivity is the clip. Cross-device rounds are user-level
DP: the unit is a device (one person's genome). Each
device adds its share of Skellam noise inside the codec (`CodecSpec.noise_variance`, the
noise stage of `privacy/noise.py`), so the survivors' sum carries at least
`min_survivors * noise_variance` per coordinate: the round is calibrated for the fewest
survivors it accepts, SecAgg+'s threshold t. `l2` and `l1` are what one device's encoding
can change the sum by, in ring units, and follow from the codec (clip, scale, dimension,
conditional rounding); a device recomputes them instead of trusting them. Adjacency is
add/remove (a unit's contribution present or absent, what membership inference asks);
replacing one unit by another would double them.

The figures `epsilon_before` and `epsilon_after` are the aggregator's ledger (the spend of a
device that took part in every round so far, with no amplification by sampling assumed),
signed so that a device can show its owner what the federation says; the device's own
ledger (`agent/ledger.py`) is computed from the mechanism's parameters, never from them.

A task that carries noise without a privacy declaration, a declaration without noise, or
parameters that do not fit its codec and round is refused with one line
(`check_consistent`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from genofed.errors import LocalInputError, MessageError
from genofed.protocol.codec_stages import encoded_sensitivity
from genofed.protocol.fields import Fields

if TYPE_CHECKING:
    from genofed.protocol.roundspec import CodecSpec, TrainingSpec
    from genofed.protocol.secagg import RoundConfig

# cross-device, user-level: Skellam noise in the codec; cross-silo, record-level: DP-SGD
MECHANISMS = {"device": "skellam", "record": "sampled_gaussian"}
UNITS = tuple(MECHANISMS)
# The target epsilon (over all rounds, at delta 1e-5, no amplification by sampling assumed) of
# a federation that turns DP on without naming one. Chosen by the red team (`genofed bench
# redteam`, docs/ARCHITECTURE.md): the smallest round numbers of epsilon at which no attack it
# runs reached AUC 0.55 or TPR 0.5% at 0.1% FPR. Per device, 1 (at 2 the released model's
# loss threshold and LiRA read 0.56 on 100 one-genome devices over 8 rounds: epsilon 2
# allows an attack up to 0.63 there, and that one comes close); per record, 2 (0.554 at 3 on
# the demo's clinics). A federation trades privacy for accuracy by naming a larger one.
DEFAULT_EPSILON = {"device": 1.0, "record": 2.0}
# How far the declared sensitivity may sit above the device's own computation: float
# formatting through JSON only; a smaller declared value is always refused.
SENSITIVITY_SLACK = 1e-9


@dataclass(frozen=True)
class PrivacySpec:
    """A round's declared differential privacy (see the module docstring)."""

    delta: float
    target_epsilon: float
    min_survivors: int
    l2: float
    l1: float
    epsilon_before: float
    epsilon_after: float
    unit: str = "device"
    mechanism: str = "skellam"
    accountant: str = "RDP"

    def __post_init__(self) -> None:
        if MECHANISMS.get(self.unit) != self.mechanism:
            raise LocalInputError(f"privacy unit {self.unit!r} with mechanism "
                                  f"{self.mechanism!r}: the units are a device (skellam) and "
                                  f"a record (sampled_gaussian)")
        if not 0 < self.delta < 1:
            raise LocalInputError(f"privacy delta must be in (0, 1), got {self.delta!r}")
        for name in ("target_epsilon", "l2", "l1"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise LocalInputError(f"privacy {name} must be a finite number > 0, got {v!r}")
        if not (0 <= self.epsilon_before <= self.epsilon_after <= self.target_epsilon
                * (1 + 1e-9)):
            raise LocalInputError(
                f"privacy ledger figures must satisfy 0 <= before ({self.epsilon_before}) "
                f"<= after ({self.epsilon_after}) <= target ({self.target_epsilon})")
        if self.min_survivors < 1:
            raise LocalInputError("privacy min_survivors must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, f: Fields) -> PrivacySpec:
        """The declaration a task carries; MessageError on anything malformed."""
        try:
            return cls(delta=f.number("delta"), target_epsilon=f.number("target_epsilon"),
                       min_survivors=f.integer("min_survivors", 1),
                       l2=f.number("l2"), l1=f.number("l1"),
                       epsilon_before=f.number("epsilon_before"),
                       epsilon_after=f.number("epsilon_after"), unit=f.text("unit", 16),
                       mechanism=f.text("mechanism", 16), accountant=f.text("accountant", 64))
        except (MessageError, LocalInputError) as exc:
            raise MessageError(f"bad privacy spec: {exc}") from None

    def describe(self) -> str:
        """One line for logs and status: what the federation says it has spent."""
        return (f"epsilon {self.epsilon_after:.3g} of {self.target_epsilon:g} after this round "
                f"at delta {self.delta:g}, per {self.unit}, {self.accountant}, no amplification "
                f"by sampling assumed")


@dataclass(frozen=True)
class DpSgd:
    """A round's DP-SGD parameters: per-example clip norm, noise multiplier (noise std over the
    clip) and Poisson sample rate. Validated on construction."""

    clip: float
    noise_multiplier: float
    sample_rate: float

    def __post_init__(self) -> None:
        for name in ("clip", "noise_multiplier", "sample_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise LocalInputError(f"dpsgd: {name} must be a finite number, got {v!r}")
        if self.clip <= 0:
            raise LocalInputError(f"dpsgd: clip must be > 0, got {self.clip}")
        if self.noise_multiplier < 0:
            raise LocalInputError(f"dpsgd: noise_multiplier must be >= 0, got "
                                  f"{self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise LocalInputError(f"dpsgd: sample_rate must be in (0, 1], got "
                                  f"{self.sample_rate}")

    def to_json(self) -> dict[str, float]:
        """The parameters as a JSON object."""
        return {"clip": float(self.clip), "noise_multiplier": float(self.noise_multiplier),
                "sample_rate": float(self.sample_rate)}

    @classmethod
    def from_json(cls, raw: Any) -> DpSgd:
        """Parse `to_json`'s object; one-line LocalInputError on anything else."""
        keys = {"clip", "noise_multiplier", "sample_rate"}
        if not isinstance(raw, Mapping) or set(raw) != keys:
            got = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
            raise LocalInputError(f"dpsgd: want an object with keys {sorted(keys)}, got {got}")
        return cls(clip=raw["clip"], noise_multiplier=raw["noise_multiplier"],
                   sample_rate=raw["sample_rate"])

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps that make `epochs` passes in expectation (Opacus: an epoch is 1/q batches)."""
        if not (math.isfinite(epochs) and epochs >= 0):
            raise LocalInputError(f"dpsgd: epochs must be >= 0, got {epochs}")
        return round(epochs / self.sample_rate)


@dataclass(frozen=True)
class PrivacySpent:
    """What a model release says the rounds behind it spent (the aggregator's ledger): the
    epsilon of a device that took part in every one of them, without amplification, and
    the amplified one where the cohort is sampled (assuming the sampling is honest and
    secret, which the devices cannot check)."""

    epsilon: float
    delta: float
    rounds: int
    amplified_epsilon: float | None = None
    sample_rate: float | None = None
    unit: str = "device"
    accountant: str = "RDP"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, f: Fields) -> PrivacySpent:
        try:
            out = cls(epsilon=f.number("epsilon"), delta=f.number("delta"),
                      rounds=f.integer("rounds"),
                      amplified_epsilon=f.number("amplified_epsilon")
                      if f.has("amplified_epsilon") else None,
                      sample_rate=f.number("sample_rate") if f.has("sample_rate") else None,
                      unit=f.text("unit", 16), accountant=f.text("accountant", 64))
        except MessageError as exc:
            raise MessageError(f"bad privacy spent: {exc}") from None
        if not (out.epsilon >= 0 and 0 < out.delta < 1):
            raise MessageError("bad privacy spent: epsilon must be >= 0 and delta in (0, 1)")
        return out

    def describe(self) -> str:
        amp = "" if self.amplified_epsilon is None else (
            f"; {self.amplified_epsilon:.3g} if the cohort (rate {self.sample_rate:g}) is "
            f"sampled honestly and secretly")
        rounds = f"{self.rounds} round{'s' if self.rounds != 1 else ''}"
        return (f"epsilon {self.epsilon:.3g} at delta {self.delta:g} over {rounds}, "
                f"per {self.unit}, {self.accountant}, no amplification by sampling{amp}")


def check_consistent(privacy: PrivacySpec | None, codec: CodecSpec, secagg: RoundConfig,
                     training: TrainingSpec) -> None:
    """Refuse, in one line, an open task whose privacy declaration is missing or does not
    fit its codec, training and round: noise (in the codec, or DP-SGD in the training)
    without a declaration or the reverse, noise calibrated for more survivors than the round
    accepts (SecAgg+'s t), or a declared sensitivity below what the codec lets one device
    put in the ring (or other than the DP-SGD clip)."""
    noisy, dpsgd = codec.noise_variance > 0, training.dpsgd
    if privacy is None and (noisy or dpsgd is not None):
        raise MessageError(f"the task's {'codec adds noise' if noisy else 'training is DP-SGD'}"
                           f" but the task declares no privacy")
    if privacy is None:
        return
    if privacy.unit == "record":
        if dpsgd is None or not dpsgd.noise_multiplier > 0:
            raise MessageError("the task declares record-level privacy but its training is "
                               "not DP-SGD with noise")
        if noisy:
            raise MessageError("a record-level task adds no noise in the codec")
        if not math.isclose(privacy.l2, dpsgd.clip, rel_tol=1e-12):
            raise MessageError(f"the task declares sensitivity {privacy.l2:g}; its DP-SGD "
                               f"clips at {dpsgd.clip:g}")
        return
    if dpsgd is not None:
        raise MessageError("a device-level task trains without DP-SGD")
    if not noisy:
        raise MessageError("the task declares differential privacy but its codec adds no noise")
    t = secagg.params.t
    if privacy.min_survivors > t:
        raise MessageError(f"the task's noise is calibrated for {privacy.min_survivors} "
                           f"survivors, but its round completes with as few as {t}")
    try:
        l2, l1 = encoded_sensitivity(codec.clip, codec.scale, secagg.length,
                                     conditional_beta=codec.conditional_beta)
    except LocalInputError as exc:
        raise MessageError(f"the task's codec is not one a privacy declaration fits: {exc}"
                           ) from None
    floor = 1 - SENSITIVITY_SLACK
    if privacy.l2 < l2 * floor or privacy.l1 < l1 * floor:
        raise MessageError(f"the task declares sensitivity l2={privacy.l2:.6g}, "
                           f"l1={privacy.l1:.6g}; its codec lets one device reach "
                           f"l2={l2:.6g}, l1={l1:.6g}")
