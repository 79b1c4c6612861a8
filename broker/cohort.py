"""Which devices take part in a round: enrolled, online, sampled, within the bounds."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CohortPolicy:
    """At least `min_participants`, at most `max_participants`, each online device drawn with
    probability `sampling_rate` (then topped up at random to the minimum when possible)."""

    min_participants: int = 3
    max_participants: int = 100
    sampling_rate: float = 1.0

    def __post_init__(self) -> None:
        if not 3 <= self.min_participants <= self.max_participants:
            raise ValueError(f"need 3 <= min_participants <= max_participants (secure "
                             f"aggregation needs three), got {self.min_participants} and "
                             f"{self.max_participants}")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"sampling_rate must be in (0, 1], got {self.sampling_rate}")


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
