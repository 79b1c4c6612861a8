"""Which devices take part in a round: enrolled, online, not resting, sampled, within bounds.

A device can be online and still never answer: its process is stuck, or its training takes
longer than the first stage's deadline. Picked every round, it costs every other device a
wasted training run per round, and in a small federation it aborts every round. `Sidelined`
rests a device after `sideline_after` consecutive rounds in which it was picked and sent
nothing, for `sideline_s`, doubling with each further silent round up to `MAX_REST_S`. An
answer, or a new connection (its status turning online again), ends the rest.

A device that keeps answering can still stop rounds: an unusable key, shares that do not
open, a false accusation. One excluded from a round for such provable disruption
(`protocol/secagg/blame.py`) rests at once, `sideline_s` times two per offence (its first rest
is twice a silent one's) up to `MAX_REST_S`; neither an answer nor a new connection ends that
rest, and its offences are never forgotten while the aggregator runs.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from genofed.errors import LocalInputError

log = logging.getLogger(__name__)
MAX_REST_S = 3600.0


@dataclass(frozen=True)
class CohortPolicy:
    """At least `min_participants`, at most `max_participants`, each online device drawn with
    probability `sampling_rate` (then topped up at random to the minimum when possible)."""

    min_participants: int = 3
    max_participants: int = 100
    sampling_rate: float = 1.0
    sideline_after: int = 2  # consecutive silent rounds before a rest; 0 = never
    sideline_s: float = 60.0  # the first rest

    def __post_init__(self) -> None:
        if not 3 <= self.min_participants <= self.max_participants:
            raise LocalInputError(f"need 3 <= min_participants <= max_participants (secure "
                             f"aggregation needs three), got {self.min_participants} and "
                             f"{self.max_participants}")
        if not 0 < self.sampling_rate <= 1:
            raise LocalInputError(f"sampling_rate must be in (0, 1], got {self.sampling_rate}")
        if self.sideline_after < 0 or not self.sideline_s > 0:
            raise LocalInputError(f"need sideline_after >= 0 and sideline_s > 0, got "
                             f"{self.sideline_after} and {self.sideline_s}")


def select(policy: CohortPolicy, enrolled: Collection[str], online: Collection[str],
           rng: np.random.Generator) -> tuple[str, ...] | None:
    """The round's cohort, sorted, or None when too few enrolled devices are online."""
    pool = sorted(set(enrolled) & set(online))
    if len(pool) < policy.min_participants:
        return None
    order = rng.permutation(len(pool))
    drawn = [pool[i] for i in order if rng.random() < policy.sampling_rate]
    rest = [pool[i] for i in order if pool[i] not in drawn]
    drawn += rest[:max(0, policy.min_participants - len(drawn))]
    return tuple(sorted(drawn[:policy.max_participants]))


class Sidelined:
    """Devices resting after silent rounds (no I/O; times are the caller's monotonic clock)."""

    def __init__(self, policy: CohortPolicy) -> None:
        self.after, self.rest_s = policy.sideline_after, policy.sideline_s
        self.silent_rounds: dict[str, int] = {}
        self.until: dict[str, float] = {}
        self.offences: dict[str, int] = {}
        self.barred: dict[str, float] = {}  # until when a device rests for disrupting

    def round_closed(self, picked: Collection[str], answered: Collection[str],
                     now: float) -> dict[str, float]:
        """Count a closed round; returns the devices that now rest, with their rest in s."""
        resting: dict[str, float] = {}
        for d in picked:
            if d in answered:
                self.forget(d)
                continue
            n = self.silent_rounds[d] = self.silent_rounds.get(d, 0) + 1
            if self.after and n >= self.after:
                resting[d] = min(MAX_REST_S, self.rest_s * 2.0 ** (n - self.after))
                self.until[d] = now + resting[d]
        return resting

    def blamed(self, devices: Collection[str], now: float) -> dict[str, float]:
        """Count an offence of each of `devices` (excluded from a round for provable
        disruption); returns their rests in s."""
        resting: dict[str, float] = {}
        for d in devices:
            n = self.offences[d] = self.offences.get(d, 0) + 1
            resting[d] = min(MAX_REST_S, self.rest_s * 2.0 ** n)
            self.barred[d] = max(self.barred.get(d, now), now + resting[d])
        return resting

    def after_round(self, round_: int, picked: Collection[str], answered: Collection[str],
                    excluded: Mapping[str, str], now: float) -> None:
        """Count a closed round (`excluded`: device -> the kind of disruption it was excluded
        for) and say who now rests, and for how long."""
        rests = self.round_closed(picked, set(answered) | excluded.keys(), now)
        for device, rest_s in sorted(rests.items()):
            log.warning("%s was picked and sent nothing in %d rounds in a row: left out of "
                        "rounds for %.0f s", device, self.silent_rounds[device], rest_s)
        for device, rest_s in sorted(self.blamed(excluded, now).items()):
            log.warning("%s disrupted round %d (%s): left out of rounds for %.0f s", device,
                        round_, excluded[device], rest_s)

    def forget(self, device: str) -> None:
        """A fresh start for `device` after silence (it answered, or it connected again); a
        rest for disrupting stays."""
        self.silent_rounds.pop(device, None)
        self.until.pop(device, None)

    def resting(self, now: float) -> set[str]:
        """The devices to leave out of a cohort drawn at `now` (rests that ended are
        forgotten, so this holds no more than the devices resting)."""
        for rests in (self.until, self.barred):
            for d in [d for d, t in rests.items() if t <= now]:
                del rests[d]
        return set(self.until) | set(self.barred)
