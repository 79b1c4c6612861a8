"""FedAvg rounds as a state machine with no I/O: updates and clock ticks in, decisions out.

A round trains on model version v. It closes when `target_updates` devices have answered, or
at its deadline if at least `min_updates` have; then the model becomes
v+1 = v + server_lr * (sum_i n_i delta_i) / (sum_i n_i). A round that reaches its deadline
with fewer updates aborts: nothing is averaged, and the next round retrains on v.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genofed.protocol.messages import Update


@dataclass(frozen=True)
class RoundPolicy:
    rounds: int = 5
    min_updates: int = 1
    target_updates: int = 1
    round_timeout_s: float = 120.0
    server_lr: float = 1.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 1 <= self.min_updates <= self.target_updates:
            raise ValueError(f"need 1 <= min_updates <= target_updates, got "
                             f"{self.min_updates} and {self.target_updates}")
        if not self.round_timeout_s > 0 or not self.server_lr > 0 or not self.lr > 0:
            raise ValueError("round_timeout_s, server_lr and lr must be > 0")
        if self.local_epochs < 1 or self.batch_size < 1:
            raise ValueError("local_epochs and batch_size must be >= 1")


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round, as the journal and the demo report it."""

    round: int
    model_version: int
    status: str  # "completed" or "aborted"
    participants: int
    devices: tuple[str, ...]
    examples: int
    mean_loss: float  # example-weighted loss of the round's starting model on local data
    bytes_up: int
    bytes_down: int
    seconds: float


@dataclass
class _Open:
    round: int
    opened_at: float
    updates: dict[str, Update] = field(default_factory=dict)
    bytes_up: int = 0


class FedAvgRounds:
    """The aggregator's round logic. `now` is any monotonic clock in seconds."""

    def __init__(self, policy: RoundPolicy, weights: np.ndarray, *, version: int = 0,
                 next_round: int = 0) -> None:
        self.policy = policy
        self.weights = weights.astype(np.float32)
        self.version = version
        self._next_round = next_round
        self.current: _Open | None = None

    @property
    def finished(self) -> bool:
        return self.version >= self.policy.rounds

    def open(self, now: float, *, round_: int | None = None) -> int:
        """Start the next round (or resume round `round_`) on the current model."""
        if self.finished:
            raise RuntimeError("all rounds are done")
        number = self._next_round if round_ is None else round_
        self.current = _Open(round=number, opened_at=now)
        self._next_round = number + 1
        return number

    def offer(self, update: Update, payload_bytes: int) -> str | None:
        """Take an update for the open round; returns why it was refused, or None."""
        cur = self.current
        if cur is None:
            return "no round is open"
        if update.round != cur.round:
            return f"update is for round {update.round}, round {cur.round} is open"
        if update.device in cur.updates:
            return f"device {update.device} already answered round {cur.round}"
        if update.delta.shape != self.weights.shape:
            return f"update has {update.delta.size} values, the model {self.weights.size}"
        if len(cur.updates) >= self.policy.target_updates:
            return f"round {cur.round} already has its {self.policy.target_updates} updates"
        cur.updates[update.device] = update
        cur.bytes_up += payload_bytes
        return None

    def poll(self, now: float) -> RoundRecord | None:
        """Close the open round if it is complete or past its deadline."""
        cur = self.current
        if cur is None:
            return None
        n = len(cur.updates)
        late = now - cur.opened_at >= self.policy.round_timeout_s
        if n < self.policy.target_updates and not late:
            return None
        completed = n >= self.policy.min_updates
        ups = list(cur.updates.values())
        examples = sum(u.n_examples for u in ups)
        if completed:
            step = sum((u.n_examples * u.delta.astype(np.float64) for u in ups),
                       np.zeros(self.weights.shape)) / examples
            self.weights = (self.weights + self.policy.server_lr * step).astype(np.float32)
        record = RoundRecord(
            round=cur.round, model_version=self.version,
            status="completed" if completed else "aborted", participants=n,
            devices=tuple(sorted(cur.updates)), examples=examples,
            mean_loss=(sum(u.n_examples * u.mean_loss for u in ups) / examples
                       if examples else float("nan")),
            bytes_up=cur.bytes_up, bytes_down=sum(u.bytes_down for u in ups),
            seconds=now - cur.opened_at)
        if completed:
            self.version += 1
        self.current = None
        return record
