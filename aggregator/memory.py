"""The aggregator's store in memory, for simulations: the same effects, the same snapshot.

It keeps what `store.Store` keeps, with the same rules (one message per device and stage, a
round's messages dropped when it closes, a model version stored once), so a simulated
aggregator restarts from exactly what a real one would find in SQLite.
`tests/unit/test_aggregator_core.py` applies one recorded run to both and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genofed.aggregator.effects import (
    Durable,
    Journal,
    Moments,
    OpenRound,
    Snapshot,
    StoreMessage,
    StoreModel,
    StoreRound,
    StoreStage,
)
from genofed.aggregator.record import RoundRecord


@dataclass
class _Round:
    model_version: int
    opened: float
    task: bytes
    stage: str | None = None
    messages: dict[str, dict[str, bytes]] = field(default_factory=dict)  # stage -> device
    record: RoundRecord | None = None


class MemoryStore:
    """Durable aggregator state that lasts as long as the process (times are virtual)."""

    def __init__(self) -> None:
        self.models: dict[int, tuple[np.ndarray, Moments | None]] = {}
        self.rounds: dict[int, _Round] = {}
        self.devices: dict[str, bytes] = {}

    def apply(self, effect: Durable, now: float) -> None:
        """Keep what one durable effect says."""
        if isinstance(effect, StoreMessage):
            r = self.rounds[effect.round]
            r.messages.setdefault(effect.stage, {}).setdefault(effect.device, effect.payload)
        elif isinstance(effect, StoreStage):
            self.rounds[effect.round].stage = effect.stage
        elif isinstance(effect, StoreRound):
            if effect.round in self.rounds:
                raise ValueError(f"round {effect.round} is stored already")
            self.rounds[effect.round] = _Round(effect.model_version, now, effect.task)
        elif isinstance(effect, Journal):
            if effect.model is not None:
                self._put_model(*effect.model, effect.moments)
            r = self.rounds[effect.record.round]
            r.record, r.messages = effect.record, {}
        elif isinstance(effect, StoreModel):
            self._put_model(effect.version, effect.weights, None)

    def _put_model(self, version: int, weights: np.ndarray, moments: Moments | None) -> None:
        if version in self.models:
            raise ValueError(f"model version {version} is stored already")
        kept = None if moments is None else (moments[0].copy(), moments[1].copy())
        self.models[version] = (np.asarray(weights, np.float32).copy(), kept)

    def snapshot(self, now: float) -> Snapshot:
        """What the aggregator's core reads back at start."""
        newest = max(self.models, default=None)
        open_ = [n for n, r in self.rounds.items() if r.record is None]
        in_flight = None
        if open_:
            n = max(open_)
            r = self.rounds[n]
            in_flight = OpenRound(n, r.model_version, now - r.opened, r.task, r.stage,
                                  {s: tuple(m.items()) for s, m in r.messages.items()})
        return Snapshot(
            model=None if newest is None else (newest, self.models[newest][0].copy()),
            moments=None if newest is None else self.models[newest][1],
            next_round=max(self.rounds, default=-1) + 1, in_flight=in_flight,
            enrolled=dict(self.devices),
            spent=tuple(r.privacy for r in self.journal() if r.privacy is not None))

    def journal(self) -> list[RoundRecord]:
        """The records of the closed rounds, in order."""
        return [r.record for _, r in sorted(self.rounds.items()) if r.record is not None]
