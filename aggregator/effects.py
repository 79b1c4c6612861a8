"""What goes into the aggregator's core and what comes out of it: events in, effects out.

The core (`core.py`) decides; the shell (`service.py`, or the simulator `simulate.py`) does,
applying each list of effects in order. Durable effects come before the acknowledgement or
publication that depends on them, and the core emits them in that order:

    StoreMessage  before  Ack of that delivery
    StoreRound    before  Publish of the round's task
    StoreStage    before  Publish of that stage's requests to inboxes
    StoreModel / Journal (with its model)  before  Publish of that model

`tests/unit/test_aggregator_core.py` checks these over every recorded run, crashes included.
A shell that dies between two effects loses the later ones; what it had applied is what the
next start reads back (`Snapshot`, then the `Restored` event).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from genofed.aggregator.record import RoundRecord

Moments = tuple[np.ndarray, np.ndarray]


# -- events ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenRound:
    """A round that was open when the state was last written: its sealed task (None for a
    round opened by schema 1), the last stage whose requests were recorded as sent (None before
    any), how long ago it opened, and its stored messages by stage, in acceptance order."""

    round: int
    model_version: int
    age_s: float
    task: bytes | None = None
    stage: str | None = None
    messages: Mapping[str, tuple[tuple[str, bytes], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """What the store holds that the core needs, read back at start."""

    model: tuple[int, np.ndarray] | None  # newest stored version and its weights
    moments: Moments | None  # the server optimizer's state stored with it
    next_round: int
    in_flight: OpenRound | None
    enrolled: Mapping[str, bytes]  # device -> Ed25519 verify key
    spent: tuple[Mapping[str, Any], ...] = ()  # the privacy ledger's entries, round by round


@dataclass(frozen=True)
class Restored:
    """The store was read back: the first event of every run."""

    snapshot: Snapshot
    now: float


class Token(Protocol):
    """What acknowledges one delivery to the broker (QoS 1)."""

    def ack(self) -> None: ...


@dataclass(frozen=True)
class Delivered:
    """The broker delivered `payload` on `topic`; `token` acknowledges it."""

    topic: str
    payload: bytes = field(repr=False)
    token: Token
    now: float


@dataclass(frozen=True)
class Ticked:
    """The clock moved on. `enrolled` is the device table, read again when the core said it is
    about to draw a cohort (`AggregatorCore.cohort_due`); None otherwise."""

    now: float
    enrolled: Mapping[str, bytes] | None = None


@dataclass(frozen=True)
class Reconnected:
    """The link to the broker came back: a broker that crashed may have lost the retained
    model and task it held (it saves them every few seconds), so the core publishes them
    again; a device that had them drops the copy."""

    now: float


Event = Restored | Delivered | Ticked | Reconnected


# -- effects ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoreModel:
    """Keep model `version` (the initial one: later versions are stored by `Journal`)."""

    version: int
    weights: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class StoreRound:
    """Keep a round opened on `model_version`, with its sealed task."""

    round: int
    model_version: int
    task: bytes = field(repr=False)


@dataclass(frozen=True)
class StoreMessage:
    """Keep an accepted message of the round in flight."""

    round: int
    stage: str
    device: str
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class StoreStage:
    """Record that the round has moved to `stage` (before that stage's requests go out)."""

    round: int
    stage: str


@dataclass(frozen=True)
class Journal:
    """Close a round: its record and, if it completed, the model it produced with the server
    optimizer's moments after it, in one transaction. `update` is the decoded weighted mean
    of the survivors' updates (over every coordinate; not stored), for simulations."""

    record: RoundRecord
    model: tuple[int, np.ndarray] | None = field(default=None, repr=False)
    moments: Moments | None = field(default=None, repr=False)
    update: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Ack:
    """Acknowledge a delivery: the broker may forget it."""

    token: Token


@dataclass(frozen=True)
class Publish:
    """Publish at QoS 1 and wait for the broker's acknowledgement."""

    topic: str
    payload: bytes = field(repr=False)
    retain: bool = False


@dataclass(frozen=True)
class Count:
    """Move a metric by `value`: a counter adds it, a gauge is set to it, a histogram observes
    it (`metrics.py` knows which metric is which)."""

    metric: str
    label: str = ""
    value: float = 1.0


Durable = StoreModel | StoreRound | StoreMessage | StoreStage | Journal
Effect = Durable | Ack | Publish | Count


@dataclass(frozen=True)
class Batch:
    """How the service applies a list of effects: `runs` in order, each all publications (one
    round trip to the broker) or all durable effects (one transaction), then every `ack`.
    No effect waits on an acknowledgement, so moving them to the end keeps each after what it
    acknowledges; durable effects and publications keep their order among themselves."""

    runs: tuple[tuple[Effect, ...], ...]
    counts: tuple[Count, ...]
    acks: tuple[Ack, ...]


def batch(effects: Iterable[Effect]) -> Batch:
    """Group `effects` (in the core's order) for the service; see `Batch`."""
    runs: list[list[Effect]] = []
    counts: list[Count] = []
    acks: list[Ack] = []
    for e in effects:
        if isinstance(e, Ack):
            acks.append(e)
        elif isinstance(e, Count):
            counts.append(e)
        elif runs and isinstance(e, Publish) == isinstance(runs[-1][0], Publish):
            runs[-1].append(e)
        else:
            runs.append([e])
    return Batch(tuple(tuple(r) for r in runs), tuple(counts), tuple(acks))
