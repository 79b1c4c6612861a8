"""The aggregator's privacy ledger, and the noise it asks of each round (no I/O).

Cross-device rounds are user-level DP (the unit is a device). Each round's noise is
calibrated, when the round is planned, for what is left of the federation's target: the
summed-noise variance sigma^2 such that the rounds already spent plus the rounds still to
run, each at that variance, stay within `[privacy] epsilon` at `delta`. Each device adds
sigma^2 / t, t being the fewest survivors the round accepts (SecAgg+'s threshold), so any
accepted dropout count leaves at least sigma^2 in the sum (`privacy/noise.py`).

What is recorded, per round whose sum was unmasked (completed, or aborted by the aggregate
check: either way the aggregator saw the sum), in the round's journal record:
- `rdp`: the round's Rényi curve at its fewest accepted survivors, the figure a device
  recomputes from the signed task (so the two ledgers agree), composed into `epsilon`;
- `rdp_actual`: the same with the survivors it actually had (more noise, smaller epsilon),
  composed into `epsilon_with_survivors`;
- `epsilon_amplified`: where the cohort is sampled (`[cohort] sampling_rate` < 1), the
  curve amplified by Poisson sampling at that rate (`privacy.rdp.poisson_subsampled_rdp`).
  It assumes the sampling is honest and secret, which no device can check, so it is
  reported beside the unamplified figure and never instead of it.
A restarted aggregator composes the stored curves again (`restore`). A round that would pass
the target is not opened (`BudgetSpent`, said in the log): the federation is finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genofed.errors import GenofedError
from genofed.privacy.calibrate import choose_dp_codec
from genofed.privacy.rdp import ORDERS, poisson_subsampled_rdp, rdp_to_epsilon, skellam_rdp
from genofed.protocol.privacyspec import PrivacySpec, PrivacySpent
from genofed.protocol.roundspec import CodecSpec

ACCOUNTANT = "RDP accountant (Skellam bound of Agarwal et al. 2021)"


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
    rdp: np.ndarray = field(default_factory=_zeros)
    rdp_actual: np.ndarray = field(default_factory=_zeros)
    rdp_amplified: np.ndarray = field(default_factory=_zeros)
    rounds: int = 0

    @classmethod
    def restore(cls, target: float, delta: float, sample_rate: float | None,
                spent: Sequence[Mapping[str, Any]]) -> PrivacyLedger:
        """The ledger from the `privacy` parts of the stored round records."""
        ledger = cls(target, delta, sample_rate)
        for rec in spent:
            ledger._add(np.asarray(rec["rdp"], dtype=np.float64),
                        np.asarray(rec["rdp_actual"], dtype=np.float64))
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

    def round_variance(self, l2: float, l1: float, remaining: int) -> float:
        """The least summed-noise variance sigma^2 such that `remaining` more rounds at it keep
        the federation within its target (bisection on log sigma^2: epsilon falls as it
        grows); BudgetSpent if no variance can."""
        if remaining < 1:
            raise BudgetSpent("no rounds remain")
        floor = self.epsilon()
        if floor >= self.target:
            raise BudgetSpent(f"the federation has spent epsilon {floor:.4g} of its target "
                              f"{self.target:g} at delta {self.delta:g}")

        def eps(v: float) -> float:
            return self.epsilon(self.rdp + remaining * skellam_rdp(l2=l2, l1=l1, variance=v))

        lo, hi = 1e-6, 1.0
        while eps(hi) > self.target:
            lo, hi = hi, hi * 16
            if hi > 1e36:
                raise BudgetSpent(f"what is left of epsilon {self.target:g} (spent "
                                  f"{floor:.4g}) cannot pay for {remaining} more rounds")
        for _ in range(100):  # to 0.1% of sigma^2, erring towards more noise
            if hi / lo < 1.001:
                break
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if eps(mid) <= self.target else (mid, hi)
        return hi

    def declare(self, *, l2: float, l1: float, variance: float, min_survivors: int
                ) -> PrivacySpec:
        """The round's declaration, with the ledger's figures before and after it."""
        after = self.epsilon(self.rdp + skellam_rdp(l2=l2, l1=l1, variance=variance))
        if after > self.target * (1 + 1e-9):
            raise BudgetSpent(f"the round would bring epsilon to {after:.4g}, past the "
                              f"target {self.target:g}")
        return PrivacySpec(delta=self.delta, target_epsilon=self.target,
                           min_survivors=min_survivors, l2=l2, l1=l1,
                           epsilon_before=self.epsilon(), epsilon_after=min(after, self.target),
                           accountant=ACCOUNTANT)

    def spend(self, spec: PrivacySpec, noise_variance: float, survivors: int
              ) -> dict[str, Any]:
        """Record a round whose sum was unmasked; returns the journal record's `privacy`."""
        rdp = skellam_rdp(l2=spec.l2, l1=spec.l1, variance=spec.min_survivors * noise_variance)
        actual = skellam_rdp(l2=spec.l2, l1=spec.l1,
                             variance=max(survivors, spec.min_survivors) * noise_variance)
        self._add(rdp, actual)
        return {"unit": "device", "accountant": ACCOUNTANT, "delta": self.delta,
                "target_epsilon": self.target, "min_survivors": spec.min_survivors,
                "survivors": survivors, "noise_variance": noise_variance,
                "epsilon_round": self.epsilon(rdp), "epsilon": self.epsilon(),
                "epsilon_with_survivors": self.epsilon(self.rdp_actual),
                "epsilon_amplified": self.amplified(), "sample_rate": self.sample_rate,
                "rdp": [float(v) for v in rdp], "rdp_actual": [float(v) for v in actual]}

    def released(self) -> PrivacySpent:
        """What a model release says of the rounds behind it."""
        return PrivacySpent(epsilon=self.epsilon(), delta=self.delta, rounds=self.rounds,
                            amplified_epsilon=self.amplified(), sample_rate=self.sample_rate,
                            accountant=ACCOUNTANT)


# A large nominal sensitivity at which the Skellam bound is the Gaussian's (its discrete term
# vanishes): the noise multiplier it gives picks the first scale of the calibration.
_NOMINAL_L2 = 1e4


def noisy_codec(ledger: PrivacyLedger, *, clip: float, dim: int, n: int, t: int,
                remaining: int, rotation_seed: bytes) -> tuple[CodecSpec, PrivacySpec]:
    """A DP round's codec and declaration. The codec's DP rule (`privacy/calibrate.py`)
    picks the scale, bits and conditional rounding for a noise multiplier z; the Skellam
    bound then says what summed variance the budget needs at the sensitivity that scale
    gives, which is a slightly larger z: a few turns until the rule's noise covers it
    (each turn lowers the scale a little, and the fixed point is approached from above)."""
    nominal = ledger.round_variance(_NOMINAL_L2, math.sqrt(dim) * _NOMINAL_L2, remaining)
    z = math.sqrt(nominal) / _NOMINAL_L2
    for _ in range(20):
        rule = choose_dp_codec(dim=dim, clip=clip, n_max=n, n_min=t, noise_multiplier=z)
        need = ledger.round_variance(rule.l2, rule.l1, remaining)
        if t * rule.variance >= need:
            break
        z = math.sqrt(need) / rule.l2 * (1 + 1e-6)
    else:  # pragma: no cover - the rule's scale moves by far less than 1e-6 per turn
        raise BudgetSpent(f"the noise for epsilon {ledger.target:g} did not settle at n={n}")
    codec = CodecSpec(clip, rule.scale, rule.bits, rotation_seed, noise_variance=rule.variance,
                      noise_min_clients=t, conditional_beta=rule.conditional_beta,
                      wrap_prob=rule.wrap_prob)
    return codec, ledger.declare(l2=rule.l2, l1=rule.l1, variance=t * rule.variance,
                                 min_survivors=t)
