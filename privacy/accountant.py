"""The coordinator's privacy accountant, one for both deployments.

Gaussian events (DP-SGD steps in the cross-silo deployment, Gaussian rounds in the cross-device
one) go through dp-accounting's PLD and RDP accountants, and the tighter of the two is reported.
dp-accounting has no Skellam event, so Skellam rounds are accounted with the RDP curves of
`rdp.py` (the paper's bound, the general Poisson-sampling bound) and the same conversion as
dp-accounting's RDP accountant. Amplification by sampling assumes the cohort is sampled honestly
and secretly, which a curious aggregator does not guarantee: every cross-device answer carries
the epsilon without amplification beside the amplified one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import dp_accounting
import numpy as np
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from genofed.errors import LocalInputError
from genofed.privacy import rdp as _rdp

_LIB = f"dp-accounting {'.'.join(version('dp-accounting').split('.')[:2])}"
RDP_LIB = f"RDP accountant ({_LIB})"
PLD_LIB = f"PLD accountant ({_LIB})"
RDP_SKELLAM = "RDP accountant (Skellam bound of Agarwal et al. 2021, conversion of dp-accounting)"
UNITS = ("device", "record")


@dataclass(frozen=True)
class Epsilon:
    """An (epsilon, delta) guarantee and how it was reached."""

    epsilon: float
    delta: float
    accountant: str
    unit: str
    amplified: bool
    sample_rate: float | None = None

    def __post_init__(self) -> None:
        if math.isnan(self.epsilon) or self.epsilon < 0:
            raise LocalInputError(f"epsilon must be non-negative, got {self.epsilon!r}")
        _rdp._delta(self.delta)
        if self.unit not in UNITS:
            raise LocalInputError(f"privacy unit must be one of {UNITS}, got {self.unit!r}")
        if self.amplified != (self.sample_rate is not None):
            raise LocalInputError("an amplified epsilon needs its sample rate, and only it")
        if self.sample_rate is not None:
            _rdp._rate("sample rate", self.sample_rate)

    def describe(self) -> str:
        """One line a privacy officer can read, e.g. for the signed release or the CLI."""
        amp = (f"amplified by Poisson sampling at rate {self.sample_rate:g}" if self.amplified
               else "no amplification by sampling assumed")
        return (f"epsilon {self.epsilon:.3g} at delta {self.delta:g}, per {self.unit}, "
                f"{self.accountant}, {amp}")


def _tighter(event: dp_accounting.DpEvent, delta: float) -> tuple[float, str]:
    """Epsilon of `event` by dp-accounting's PLD and RDP accountants: the smaller, and whose."""
    rdp_acc = RdpAccountant()
    rdp_acc.compose(event)
    pld_acc = PLDAccountant()
    pld_acc.compose(event)
    e_rdp, e_pld = float(rdp_acc.get_epsilon(delta)), float(pld_acc.get_epsilon(delta))
    return (e_pld, PLD_LIB) if e_pld <= e_rdp else (e_rdp, RDP_LIB)


def _dpsgd_event(noise_multiplier: float, sample_rate: float, steps: int) -> dp_accounting.DpEvent:
    z = _rdp._finite("noise multiplier", noise_multiplier)
    q = _rdp._rate("sample rate", sample_rate)
    n = _rdp._count("steps", steps)
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), n)


def dpsgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int,
                  delta: float) -> Epsilon:
    """Record-level epsilon of `steps` DP-SGD steps, each on a Poisson sample of the records."""
    eps, name = _tighter(_dpsgd_event(noise_multiplier, sample_rate, steps), _rdp._delta(delta))
    return Epsilon(eps, delta, name, "record", True, float(sample_rate))


def _bisect_down(eps: Callable[[float], float], target: float, lo: float, hi: float,
                 rel: float) -> float:
    """The least x in [lo, hi] with eps(x) <= target, eps falling in x; eps(lo) > target >=
    eps(hi). Stops once eps(hi) is within `rel` of the target; errs towards more noise."""
    e_hi = eps(hi)
    for _ in range(60):
        if e_hi >= (1.0 - rel) * target or hi - lo < 1e-9 * hi:
            break
        mid = 0.5 * (lo + hi)
        e_mid = eps(mid)
        if e_mid <= target:
            hi, e_hi = mid, e_mid
        else:
            lo = mid
    return hi


def calibrate_dpsgd(target_epsilon: float, delta: float, sample_rate: float,
                    steps: int) -> float:
    """The least noise multiplier whose DP-SGD epsilon is within the target (and within 1% of it).

    Epsilon falls as the noise grows, so bisection finds it: first on dp-accounting's RDP
    accountant alone (cheap), whose answer bounds the tighter of the two from above, then on the
    tighter of PLD and RDP below that bound.
    """
    target = _rdp._finite("target epsilon", target_epsilon)
    _rdp._delta(delta)
    _dpsgd_event(1.0, sample_rate, steps)  # validates the rate and the step count

    def rdp_eps(z: float) -> float:
        acc = RdpAccountant()
        acc.compose(_dpsgd_event(z, sample_rate, steps))
        return float(acc.get_epsilon(delta))

    def tight_eps(z: float) -> float:
        return _tighter(_dpsgd_event(z, sample_rate, steps), delta)[0]

    hi = 1.0
    while rdp_eps(hi) > target:
        hi *= 2.0
        if hi > 1e6:
            raise LocalInputError(f"target epsilon {target_epsilon!r} is out of reach")
    lo = hi / 2.0
    while rdp_eps(lo) <= target:
        hi, lo = lo, lo / 2.0
        if lo < 1e-4:
            return hi
    hi = _bisect_down(rdp_eps, target, lo, hi, 1e-4)
    lo = 0.8 * hi
    while tight_eps(lo) <= target:
        hi, lo = lo, 0.8 * lo
    return _bisect_down(tight_eps, target, lo, hi, 0.005)


def compose(rdps: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    """Sum of RDP curves over `rdp.ORDERS`: the curve of running the mechanisms in turn."""
    return _rdp.compose(rdps)


def _rates(sample_rate: float | Sequence[float], rounds: int) -> list[float]:
    if isinstance(sample_rate, (int, float)):
        return [_rdp._rate("sample rate", sample_rate)] * rounds
    rates = [_rdp._rate(f"sample rate[{i}]", q) for i, q in enumerate(sample_rate)]
    if len(rates) != rounds:
        raise LocalInputError(f"{len(rates)} sample rates given for {rounds} rounds")
    return rates


def skellam_rounds_epsilon(rdp_per_round: Sequence[np.ndarray] | np.ndarray, delta: float, *,
                           sample_rate: float | Sequence[float] | None = None
                           ) -> tuple[Epsilon, Epsilon | None]:
    """Device-level epsilon of Skellam rounds: (without amplification, amplified or None).

    `rdp_per_round` holds one unamplified curve per round (`rdp.skellam_rdp` with the noise the
    round's survivors actually summed to), or their sum as one vector. Amplification applies to
    each round before composing, so it needs the per-round curves and the rate (one for all
    rounds, or one per round); without a rate the second answer is None.
    """
    d = _rdp._delta(delta)
    curves = np.asarray(rdp_per_round, dtype=np.float64)
    if curves.ndim == 1:
        curves = curves[None, :]
        if sample_rate is not None:
            raise LocalInputError("amplification by sampling needs the per-round RDP curves, "
                                  "not their sum")
    if curves.ndim != 2 or curves.shape[0] == 0:
        raise LocalInputError(f"RDP curves must be one vector or one per round, got shape "
                              f"{curves.shape}")
    plain = Epsilon(_rdp.rdp_to_epsilon(compose(list(curves)), d)[0], d, RDP_SKELLAM,
                    "device", False)
    if sample_rate is None:
        return plain, None
    rates = _rates(sample_rate, curves.shape[0])
    amplified = compose([_rdp.poisson_subsampled_rdp(c, q)
                         for c, q in zip(curves, rates, strict=True)])
    shown = rates[0] if len(set(rates)) == 1 else max(rates)
    return plain, Epsilon(_rdp.rdp_to_epsilon(amplified, d)[0], d, RDP_SKELLAM, "device", True,
                          shown)


def gaussian_rounds_epsilon(noise_multipliers: Sequence[float], delta: float, *,
                            sample_rate: float | Sequence[float] | None = None
                            ) -> tuple[Epsilon, Epsilon | None]:
    """Device-level epsilon of Gaussian-noise rounds, one noise multiplier (noise standard
    deviation over L2 sensitivity) per round, through dp-accounting: (without amplification,
    amplified at the given Poisson rate(s) or None)."""
    d = _rdp._delta(delta)
    zs = [_rdp._finite(f"noise multiplier[{i}]", z) for i, z in enumerate(noise_multipliers)]
    if not zs:
        raise LocalInputError("no rounds to account")

    def event(rates: list[float] | None) -> dp_accounting.DpEvent:
        keys = zip(zs, rates, strict=True) if rates is not None else ((z, 1.0) for z in zs)
        parts = []
        for (z, q), n in Counter(keys).items():
            e: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
            if q < 1.0:
                e = dp_accounting.PoissonSampledDpEvent(q, e)
            parts.append(dp_accounting.SelfComposedDpEvent(e, n))
        return dp_accounting.ComposedDpEvent(parts)

    eps, name = _tighter(event(None), d)
    plain = Epsilon(eps, d, name, "device", False)
    if sample_rate is None:
        return plain, None
    rates = _rates(sample_rate, len(zs))
    eps, name = _tighter(event(rates), d)
    shown = rates[0] if len(set(rates)) == 1 else max(rates)
    return plain, Epsilon(eps, d, name, "device", True, shown)
