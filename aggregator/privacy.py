"""The aggregator's privacy ledger, and the noise it asks of each round (no I/O).

Each round's noise is calibrated, when the round is planned, for what is left of the
federation's target: the least noise such that the rounds already spent plus the rounds
still to run, each at that noise, stay within `[privacy] epsilon` at `delta`.
- Cross-device, user-level (`unit = "device"`): the noise is a summed Skellam variance
  sigma^2; each device adds sigma^2 / t, t being the fewest survivors the round accepts
  (SecAgg+'s threshold), so any accepted dropout count leaves at least sigma^2 in the sum
  (`privacy/noise.py`, `noisy_codec`).
- Cross-silo, record-level (`unit = "record"`): the noise is DP-SGD's noise multiplier z for
  the round's steps at the configured Poisson sample rate (`privacy/sgm.py`,
  `dpsgd_training`); every clinic runs the same steps at the same rate, so one figure holds
  for every record, whatever the clinic's size (which the aggregator never learns).

What is recorded, per round whose sum was unmasked (completed, or aborted by the aggregate
check: either way the aggregator saw the sum), in the round's journal record:
- `rdp`: the round's Rényi curve at its fewest accepted survivors, the figure a device
  recomputes from the signed task (so the two ledgers agree), composed into `epsilon`;
- `rdp_actual`: the same with the survivors it actually had (more noise, smaller epsilon),
  composed into `epsilon_with_survivors`;
- `sampler_delta`: what the noise sampler's distance from exact Skellam adds to delta
  (`privacy/poisson.py`: ~1e-14 a device at the demo's size), reported beside delta;
- `epsilon_amplified`: where the cohort is sampled (`[cohort] sampling_rate` < 1), the
  curve amplified by Poisson sampling at that rate (`privacy.rdp.poisson_subsampled_rdp`).
  It assumes the sampling is honest and secret, which no device can check, so it is
  reported beside the unamplified figure and never instead of it.
A restarted aggregator composes the stored curves again (`restore`). A round that would pass
the target is not opened (`BudgetSpent`, said in the log): the federation is finished.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from genofed.errors import GenofedError, LocalInputError
from genofed.privacy.calibrate import covering_codec
from genofed.privacy.noise import SkellamNoise
from genofed.privacy.rdp import (
    ORDERS,
    least_noise,
    poisson_subsampled_rdp,
    rdp_to_epsilon,
    skellam_rdp,
)
from genofed.privacy.sgm import dpsgd_rdp
from genofed.protocol.privacyspec import MECHANISMS, DpSgd, PrivacySpec, PrivacySpent
from genofed.protocol.roundspec import CodecSpec, TrainingSpec
from genofed.protocol.schema import SecureTask

ACCOUNTANTS = {"device": "RDP accountant (Skellam bound of Agarwal et al. 2021)",
               "record": "RDP accountant (sampled Gaussian, Mironov et al. 2019)"}


class BudgetSpent(GenofedError):
    """The next round would pass the federation's privacy target."""


def _zeros() -> np.ndarray:
    return np.zeros(len(ORDERS))


@dataclass
class PrivacyLedger:
    """The federation's spend so far, composed over the rounds whose sums were unmasked."""

    target: float
    delta: float
    sample_rate: float | None = None  # None: the whole cohort every round, no amplification
    unit: str = "device"  # or "record" (DP-SGD): what one epsilon protects
    rdp: np.ndarray = field(default_factory=_zeros)
    rdp_actual: np.ndarray = field(default_factory=_zeros)
    rdp_amplified: np.ndarray = field(default_factory=_zeros)
    rounds: int = 0
    # What the noise sampler's distance from exact Skellam adds to delta, summed over the
    # rounds: a mechanism within total variation eta of an (eps, delta)-DP one is
    # (eps, delta + (1 + e^eps) eta)-DP; eta = the roster's noise vectors' `tv_bound`.
    sampler_delta: float = 0.0

    @classmethod
    def restore(cls, target: float, delta: float, sample_rate: float | None,
                spent: Sequence[Mapping[str, Any]], unit: str = "device") -> PrivacyLedger:
        """The ledger from the `privacy` parts of the stored round records."""
        ledger = cls(target, delta, sample_rate, unit)
        for rec in spent:
            ledger._add(np.asarray(rec["rdp"], dtype=np.float64),
                        np.asarray(rec["rdp_actual"], dtype=np.float64))
            ledger.sampler_delta += float(rec.get("sampler_delta_round", 0.0))
        return ledger

    def _add(self, rdp: np.ndarray, actual: np.ndarray) -> None:
        self.rdp = self.rdp + rdp
        self.rdp_actual = self.rdp_actual + actual
        if self.sample_rate is not None:
            self.rdp_amplified = self.rdp_amplified + poisson_subsampled_rdp(
                rdp, self.sample_rate)
        self.rounds += 1

    def epsilon(self, rdp: np.ndarray | None = None) -> float:
        r = self.rdp if rdp is None else rdp
        return rdp_to_epsilon(r, self.delta)[0] if np.any(r) else 0.0

    def amplified(self) -> float | None:
        return None if self.sample_rate is None else self.epsilon(self.rdp_amplified)

    def least_noise(self, curve: Callable[[float], np.ndarray], remaining: int) -> float:
        """The least noise x (whatever `curve(x)`, one round's Rényi curve, takes: a summed
        variance, a noise multiplier) such that `remaining` more rounds at it keep the
        federation within its target (`privacy.rdp.least_noise`); BudgetSpent if none can."""
        if remaining < 1:
            raise BudgetSpent("no rounds remain")
        floor = self.epsilon()
        if floor >= self.target:
            raise BudgetSpent(f"the federation has spent epsilon {floor:.4g} of its target "
                              f"{self.target:g} at delta {self.delta:g}")
        try:
            return least_noise(lambda x: self.epsilon(self.rdp + remaining * curve(x)),
                               self.target, step=16.0, lo_min=1e-6, hi_max=1e36)
        except LocalInputError:
            raise BudgetSpent(f"what is left of epsilon {self.target:g} (spent {floor:.4g}) "
                              f"cannot pay for {remaining} more rounds") from None

    def round_variance(self, l2: float, l1: float, remaining: int) -> float:
        """The least summed Skellam variance for `remaining` more device-level rounds."""
        return self.least_noise(lambda v: skellam_rdp(l2=l2, l1=l1, variance=v), remaining)

    def declare(self, rdp: np.ndarray, *, l2: float, l1: float, min_survivors: int = 1,
                unit: str = "device") -> PrivacySpec:
        """The declaration of a round whose Rényi curve is `rdp`, with the ledger's figures
        before and after it."""
        after = self.epsilon(self.rdp + rdp)
        if after > self.target * (1 + 1e-9):
            raise BudgetSpent(f"the round would bring epsilon to {after:.4g}, past the "
                              f"target {self.target:g}")
        return PrivacySpec(delta=self.delta, target_epsilon=self.target,
                           min_survivors=min_survivors, l2=l2, l1=l1,
                           epsilon_before=self.epsilon(), epsilon_after=min(after, self.target),
                           unit=unit, mechanism=MECHANISMS[unit],
                           accountant=ACCOUNTANTS[unit])

    def spend(self, task: SecureTask, survivors: int) -> dict[str, Any]:
        """Record a round whose sum was unmasked; returns the journal record's `privacy`."""
        spec, codec, dp = task.privacy, task.codec, task.training.dpsgd
        assert spec is not None and codec is not None
        if spec.unit == "record" and dp is not None:  # the same for every survivor count
            rdp = actual = dpsgd_rdp(dp.noise_multiplier, dp.sample_rate,
                                     task.training.dpsgd_steps)
        else:
            v = codec.noise_variance
            rdp = skellam_rdp(l2=spec.l2, l1=spec.l1, variance=spec.min_survivors * v)
            actual = skellam_rdp(l2=spec.l2, l1=spec.l1,
                                 variance=max(survivors, spec.min_survivors) * v)
        self._add(rdp, actual)
        tv = 0.0
        if codec.noise_variance > 0 and task.secagg is not None:
            n = len(task.secagg.roster)
            tv = n * SkellamNoise(codec.noise_variance, task.secagg.length).tv_bound
        sampler = (1 + math.exp(min(self.epsilon(), 700.0))) * tv
        self.sampler_delta += sampler
        return {"unit": spec.unit, "accountant": spec.accountant, "delta": self.delta,
                "target_epsilon": self.target, "min_survivors": spec.min_survivors,
                "survivors": survivors, "noise_variance": codec.noise_variance,
                "dpsgd": None if dp is None else {**dp.to_json(),
                                                  "steps": task.training.dpsgd_steps},
                "epsilon_round": self.epsilon(rdp), "epsilon": self.epsilon(),
                "epsilon_with_survivors": self.epsilon(self.rdp_actual),
                "epsilon_amplified": self.amplified(), "sample_rate": self.sample_rate,
                "sampler_delta_round": sampler, "sampler_delta": self.sampler_delta,
                "rdp": [float(v) for v in rdp], "rdp_actual": [float(v) for v in actual]}

    def released(self) -> PrivacySpent:
        """What a model release says of the rounds behind it."""
        return PrivacySpent(epsilon=self.epsilon(), delta=self.delta, rounds=self.rounds,
                            amplified_epsilon=self.amplified(), sample_rate=self.sample_rate,
                            unit=self.unit, accountant=ACCOUNTANTS[self.unit])


def noisy_codec(ledger: PrivacyLedger, *, clip: float, dim: int, n: int, t: int,
                remaining: int, rotation_seed: bytes) -> tuple[CodecSpec, PrivacySpec]:
    """A DP round's codec and declaration: the codec's DP rule (`privacy/calibrate.py`) at
    the noise the ledger's budget asks for at that rule's sensitivity, shared among the t
    fewest survivors the round accepts."""
    rule = covering_codec(lambda c: ledger.round_variance(c.l2, c.l1, remaining), dim=dim,
                          clip=clip, n_max=n, n_min=t)
    codec = CodecSpec(clip, rule.scale, rule.bits, rotation_seed, noise_variance=rule.variance,
                      noise_min_clients=t, conditional_beta=rule.conditional_beta,
                      wrap_prob=rule.wrap_prob)
    rdp = skellam_rdp(l2=rule.l2, l1=rule.l1, variance=t * rule.variance)
    return codec, ledger.declare(rdp, l2=rule.l2, l1=rule.l1, min_survivors=t)


def dpsgd_training(ledger: PrivacyLedger, training: TrainingSpec, *, clip: float,
                   sample_rate: float, remaining: int) -> tuple[TrainingSpec, PrivacySpec]:
    """A record-level round's training and declaration: DP-SGD at the least noise
    multiplier that lets `remaining` rounds of its steps stay within the target."""
    steps = DpSgd(clip, 1.0, sample_rate).steps_for_epochs(training.local_epochs)
    z = ledger.least_noise(lambda z: dpsgd_rdp(z, sample_rate, steps), remaining)
    dp = DpSgd(clip, z, sample_rate)
    return (replace(training, dpsgd=dp),
            ledger.declare(dpsgd_rdp(z, sample_rate, steps), l2=clip, l1=clip, unit="record"))
