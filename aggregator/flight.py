"""The round in flight at the aggregator, and how it is rebuilt after a restart.

`Flight` is what the core keeps of the round beside its SecAgg+ state machine: the task as
signed and stored, bytes each way for the journal, a digest of every accepted payload (a
byte-identical copy is a redelivery, not an attack), and after a restart the requests to send
again. `resume_flight` replays the stored messages into a fresh `SecureRound`; anything that
does not replay raises a GenofedError, and the core journals the round aborted with it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.effects import OpenRound
from genofed.aggregator.record import RoundRecord
from genofed.aggregator.secure_round import ResumeError, SecureRound, resume
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SigningIdentity, Stage

log = logging.getLogger(__name__)


@dataclass
class Flight:
    """The round in flight: its task, its state machine, and what its record will say."""

    task: SecureTask
    sealed: bytes  # the task as signed and stored
    rnd: SecureRound
    opened: float
    bytes_down: int
    bytes_up: int = 0
    seen: dict[bytes, str] = field(default_factory=dict)  # sha256 of accepted payload: stage
    # The current stage's request to each device asked, to ask again those that have not
    # answered after a restart or a broker outage (a broker killed between saves forgets
    # messages it had acknowledged; a device answers a request again from its stored answer).
    asked: dict[str, bytes] = field(default_factory=dict)

    def unanswered(self) -> dict[str, bytes]:
        """The current stage's requests to the devices that have not answered them."""
        return {d: self.asked[d] for d in sorted(self.rnd.pending) if d in self.asked}

    @property
    def max_bytes(self) -> int:
        """No client message of this round can be larger (`message_limit`)."""
        assert self.task.secagg is not None
        return message_limit(self.task.secagg.length, len(self.task.members()))

    def record(self, now: float, version: int, status: str, survivors: tuple[str, ...],
               weight: int, reason: str) -> RoundRecord:
        """What the journal keeps of this round, closed at `now` on model `version`."""
        return RoundRecord(round=self.task.round, model_version=version, status=status,
                           participants=len(survivors), devices=tuple(sorted(survivors)),
                           examples=weight, mean_loss=float("nan"), bytes_up=self.bytes_up,
                           bytes_down=self.bytes_down, seconds=now - self.opened,
                           cohort=len(self.task.members()), reason=reason,
                           stage_seconds=dict(self.rnd.log.seconds),
                           excluded={d: f"{b.kind}: {b.reason}"
                                     for d, b in sorted(self.rnd.excluded.items())})


def message_limit(length: int, members: int) -> int:
    """The largest client message of a round with ring vectors of `length` values over
    `members` devices: 8 bytes a ring value (masked input) plus generous room per peer
    (encrypted shares, unmasking answers) and for headers. The broker's packet bound is
    sized from it too (`broker/deploy.py`)."""
    return 65536 + 8 * length + 1024 * members


def resume_flight(left: OpenRound, cfg: AggregatorConfig, identity: SigningIdentity,
                  version: int, n_trained: int, now: float) -> Flight:
    """The round a previous run left in flight, rebuilt on model `version` from its sealed
    task and stored messages, at the stage it had reached (its deadline starts afresh)."""
    if left.task is None:
        raise ResumeError("its task was not stored")
    if left.model_version != version:
        raise ResumeError(f"it trains model version {left.model_version}, the newest "
                          f"stored is {version}")
    task = SecureTask.open(left.task, identity.public, cfg.federation)
    assert task.codec is not None and task.secagg is not None  # an open task has both
    stage = Stage.ADVERTISE_KEYS
    if left.stage is not None:
        if left.stage not in Stage.__members__:
            raise ResumeError(f"it was left at an unknown stage {left.stage!r}")
        stage = Stage[left.stage]
    stored = left.messages
    rnd, routes = resume(task.secagg, identity, task.codec.pipeline(n_trained), stage=stage,
                         stored=lambda s: list(stored.get(s.name, ())),
                         stage_timeout_s=cfg.rounds.stage_timeout_s, now=now)
    f = Flight(task, left.task, rnd, now - left.age_s, bytes_down=len(left.task) + sum(
        len(p) for r in routes for p in r.payloads.values()))
    for s in Stage:
        for _, payload in stored.get(s.name, ()):
            f.seen[hashlib.sha256(payload).digest()] = s.name
            f.bytes_up += len(payload) if s <= stage else 0
    f.asked = dict(routes[-1].payloads) if routes else {}
    log.warning("round %d resumed at %s from the stored messages: %d of %d answers in, "
                "%d devices asked again", left.round, stage.name, len(rnd.received),
                len(rnd.expected), len(f.unanswered()))
    return f
