"""The differential privacy a round's signed task declares, and the device's check of it.

Cross-device rounds are user-level DP: the unit is a device (one person's genome). Each
device adds its share of Skellam noise inside the codec (`CodecSpec.noise_variance`, the
noise stage of `privacy/noise.py`), so the survivors' sum carries at least
`min_survivors * noise_variance` per coordinate: the round is calibrated for the fewest
survivors it accepts, SecAgg+'s threshold t. `l2` and `l1` are what one device's encoding
can change the sum by, in ring units, and follow from the codec (clip, scale, dimension,
conditional rounding); a device recomputes them instead of trusting them.

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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from genofed.errors import LocalInputError, MessageError
from genofed.protocol.codec_stages import encoded_sensitivity
from genofed.protocol.fields import Fields

if TYPE_CHECKING:
    from genofed.protocol.roundspec import CodecSpec
    from genofed.protocol.secagg import RoundConfig

UNITS = ("device",)  # cross-device, user-level; record-level DP-SGD is a training spec's
MECHANISMS = ("skellam",)
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
        if self.unit not in UNITS or self.mechanism not in MECHANISMS:
            raise LocalInputError(f"privacy unit {self.unit!r} with mechanism "
                                  f"{self.mechanism!r}: only {UNITS} with {MECHANISMS}")
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


def check_consistent(privacy: PrivacySpec | None, codec: CodecSpec, secagg: RoundConfig
                     ) -> None:
    """Refuse, in one line, an open task whose privacy declaration is missing or does not
    fit its codec and round: noise without a declaration or the reverse, noise calibrated
    for more survivors than the round accepts (SecAgg+'s t), or a declared sensitivity
    below what the codec lets one device put in the ring."""
    noisy = codec.noise_variance > 0
    if privacy is None and noisy:
        raise MessageError("the task's codec adds noise but the task declares no privacy")
    if privacy is None:
        return
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
