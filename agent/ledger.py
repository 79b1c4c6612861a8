"""The device's own privacy ledger: what each round costs this device, checked against its
owner's caps before joining, and recorded before anything of its data leaves.

A round's cost is computed here from the mechanism the signed task declares (the Skellam
noise every device adds, the fewest survivors the round accepts, the sensitivity the device
recomputes from the codec; `protocol/privacyspec.py`), never from the epsilon figures the
aggregator puts beside it. Costs compose as Rényi DP curves over `privacy.rdp.ORDERS`
(composition is addition) and become an epsilon at the task's delta. The unit is this device
(user-level, cross-device) or each record of its cohort (record-level DP-SGD, cross-silo,
`privacy/sgm.py`); the two are kept apart. Only rounds the device joined count, and no
amplification by the cohort's sampling is assumed (a device knows it was picked); DP-SGD's
own sampling of records, which the device does secretly, is.

The entries live in the audit chain (`consent.py`, kind `privacy`), written before the
round's advertisement is sent: a round the device joined but left early is counted all the
same, so the ledger can only overstate what was spent. `refuses` is the daemon's check; a
round whose task adds no noise is refused only when the owner set a cap (its epsilon is
unbounded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genofed.agent import consent
from genofed.agent.consent import Consent
from genofed.errors import LocalInputError
from genofed.privacy.rdp import ORDERS, rdp_to_epsilon, skellam_rdp
from genofed.privacy.sgm import dpsgd_rdp
from genofed.protocol.schema import SecureTask

KIND = "privacy"


@dataclass(frozen=True)
class RoundCost:
    """What joining one round costs this device's unit: the device itself (user-level) or
    each record of its cohort (record-level, DP-SGD)."""

    round: int
    study: str
    delta: float
    unit: str
    rdp: np.ndarray = field(repr=False)

    @property
    def epsilon(self) -> float:
        return rdp_to_epsilon(self.rdp, self.delta)[0]


def round_cost(task: SecureTask) -> RoundCost | None:
    """The cost of joining `task`'s round, or None if it adds no noise (no DP)."""
    p, codec, dp = task.privacy, task.codec, task.training.dpsgd
    if p is None or codec is None:
        return None
    if p.unit == "record" and dp is not None:  # every step of DP-SGD, each record sampled
        rdp = dpsgd_rdp(dp.noise_multiplier, dp.sample_rate, task.training.dpsgd_steps)
    elif codec.noise_variance > 0:  # the sum's Skellam noise at the fewest survivors
        rdp = skellam_rdp(l2=p.l2, l1=p.l1, variance=p.min_survivors * codec.noise_variance)
    else:
        return None
    return RoundCost(task.round, task.use.study, p.delta, p.unit,
                     np.asarray(rdp, dtype=np.float64))


@dataclass
class Spent:
    """The rounds this device joined with DP, composed per unit (a device's epsilon and a
    record's never add up): in total and per study."""

    total: dict[str, np.ndarray] = field(default_factory=dict)  # unit -> curve
    by_study: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    rounds: int = 0
    delta: float | None = None  # the last round's (status converts at it)

    def add(self, unit: str, study: str, rdp: np.ndarray, delta: float) -> None:
        zero = np.zeros(len(ORDERS))
        self.total[unit] = self.total.get(unit, zero) + rdp
        self.by_study[unit, study] = self.by_study.get((unit, study), zero) + rdp
        self.rounds += 1
        self.delta = delta

    def epsilon(self, delta: float, study: str | None = None, unit: str = "device") -> float:
        rdp = self.total.get(unit) if study is None else self.by_study.get((unit, study))
        if rdp is None or not np.any(rdp):
            return 0.0
        return rdp_to_epsilon(rdp, delta)[0]


def spent(state_dir: Path) -> Spent:
    """What the audit chain says this device has spent (a damaged entry is an error: a
    ledger that cannot be read must not read as nothing spent)."""
    entries, problems = consent.verify(state_dir)
    out = Spent()
    for e in entries:
        if e.get("kind") != KIND:
            continue
        try:
            rdp = np.asarray(e["rdp"], dtype=np.float64)
            if rdp.shape != (len(ORDERS),) or not np.all(rdp >= 0):
                raise ValueError("rdp")
            out.add(str(e.get("unit", "device")), str(e["study"]), rdp, float(e["delta"]))
        except (KeyError, TypeError, ValueError):
            raise LocalInputError(f"{consent.audit_path(state_dir)}: privacy entry "
                                  f"{e.get('seq')} is not readable") from None
    if problems and out.rounds:
        raise LocalInputError(f"the privacy ledger's chain is broken: {problems[0]}")
    return out


def refuses(task: SecureTask, owner: Consent, state_dir: Path) -> str | None:
    """Why this device may not join `task`'s round under its owner's caps (None: it may)."""
    caps = (owner.epsilon_cap, owner.study_epsilon_cap)
    if caps == (None, None):
        return None
    cost = round_cost(task)
    study = repr(task.use.study) if task.use.study else "(unnamed)"
    if cost is None:
        return (f"study {study} adds no differential privacy noise, so its epsilon is "
                f"unbounded; your consent caps epsilon")
    have = spent(state_dir)
    have.add(cost.unit, cost.study, cost.rdp, cost.delta)
    whose = "this device's" if cost.unit == "device" else "each of its records'"
    for cap, what, eps in ((owner.epsilon_cap, "in total", have.epsilon(cost.delta,
                                                                       unit=cost.unit)),
                           (owner.study_epsilon_cap, f"in study {study}",
                            have.epsilon(cost.delta, cost.study, cost.unit))):
        if cap is not None and eps > cap:
            return (f"round {task.round} would bring {whose} epsilon {what} to "
                    f"{eps:.3g} at delta {cost.delta:g}, past your cap of {cap:g}")
    return None


def record(state_dir: Path, task: SecureTask) -> dict[str, Any] | None:
    """Append the round's cost to the chain (before joining); None if it adds no noise."""
    cost = round_cost(task)
    if cost is None:
        return None
    have = spent(state_dir)
    have.add(cost.unit, cost.study, cost.rdp, cost.delta)
    assert task.secagg is not None
    return consent.append(state_dir, KIND, {
        "round": task.round, "task_digest": task.secagg.digest.raw.hex(), "study": cost.study,
        "model_version": task.model_version, "unit": cost.unit, "delta": cost.delta,
        "epsilon_round": round(cost.epsilon, 6),
        "epsilon_study": round(have.epsilon(cost.delta, cost.study, cost.unit), 6),
        "epsilon_total": round(have.epsilon(cost.delta, unit=cost.unit), 6),
        "rdp": [float(v) for v in cost.rdp]})


def describe(state_dir: Path) -> str | None:
    """The status line's privacy part, or None if no round with DP was joined."""
    have = spent(state_dir)
    if not have.rounds or have.delta is None:
        return None
    delta, parts = have.delta, []
    for unit in sorted(have.total):
        studies = "; ".join(f"{s or '(unnamed)'} {have.epsilon(delta, s, unit):.3g}"
                            for u, s in sorted(have.by_study) if u == unit)
        per = "per device, no amplification by sampling" if unit == "device" else \
            "per record of this device's cohort, DP-SGD's Poisson sampling assumed"
        parts.append(f"epsilon {have.epsilon(delta, unit=unit):.3g} (per study: {studies}); "
                     f"{per}")
    rounds = f"{have.rounds} round{'s' if have.rounds != 1 else ''}"
    return f"{' | '.join(parts)}; at delta {delta:g} over {rounds}, RDP accountant"
