"""One secure round at the aggregator, as a state machine with no I/O.

Wraps `SecAggServer` with what the transport needs: device names instead of roster indices,
a deadline per stage, and the rule for closing a stage (every device that was asked has
answered, or the deadline passed). `receive` takes a payload from a device's outbox; `poll`
closes the stage when it is time and says what to send to whom, or that the round is done
(with the survivors' mean update, once their sum passed the codec's aggregate check) or
aborted. Messages are checked twice: the SecAgg+ signature against the roster identity, and
the roster identity against the outbox it came on, so a device cannot speak for another even
with a valid key of its own. A device the SecAgg+ server excludes for provable disruption
(`protocol/secagg/blame.py`) is named in `excluded` and no longer waited for. `resume`
rebuilds a round after a restart from the messages it had accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from genofed.errors import LocalInputError
from genofed.protocol.codec import CodecError
from genofed.protocol.codec_mean import MeanPipeline, SumRejected
from genofed.protocol.secagg import RoundAborted, RoundConfig, SecAggError, SecAggServer, Stage
from genofed.protocol.secagg.blame import Blame
from genofed.protocol.secagg.keys import SigningIdentity
from genofed.protocol.secagg.messages import decode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Send each payload to its device's inbox."""

    stage: Stage
    payloads: dict[str, bytes]


@dataclass(frozen=True)
class Done:
    """The round's result: the mean update of the survivors, each weighing 1 (`weight` is
    their number)."""

    mean_delta: np.ndarray
    weight: int
    survivors: tuple[str, ...]


@dataclass(frozen=True)
class Aborted:
    """The round ends without a model. `check` names the aggregate check its sum failed, if
    that is why (`SumRejected.check`, for the metric)."""

    reason: str
    check: str = ""


Event = Route | Done | Aborted


@dataclass
class StageLog:
    """When each stage closed, and who answered it (for the journal and the metrics)."""

    seconds: dict[str, float] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)


class SecureRound:
    """The aggregator's side of one SecAgg+ round, driven by `receive` and `poll`."""

    def __init__(self, config: RoundConfig, identity: SigningIdentity,
                 pipeline: MeanPipeline, *, stage_timeout_s: float, now: float) -> None:
        if pipeline.dim != config.length:
            raise ResumeError(f"pipeline makes {pipeline.dim} ring values, the round takes "
                              f"{config.length}")
        self.config = config
        self.pipeline = pipeline
        self.server = SecAggServer(config, identity)
        self.stage_timeout_s = stage_timeout_s
        self.index = {p.device: i for i, p in enumerate(config.roster)}
        self.devices = [p.device for p in config.roster]
        self.expected: set[str] = set(self.devices)
        self.received: set[str] = set()
        self.advertised: set[str] = set()  # who answered the first stage, once it closed
        self.stage_opened = now
        self.log = StageLog()
        self.finished = False
        self.excluded: dict[str, Blame] = {}  # device: why, for provable disruption
        self._fresh: list[tuple[str, Blame]] = []

    @property
    def stage(self) -> Stage:
        return self.server.stage

    def receive(self, device: str, payload: bytes) -> str | None:
        """Offer one outbox payload; returns why it was refused, or None."""
        if self.finished:
            return f"round {self.config.round} is over"
        i = self.index.get(device)
        if i is None:
            return f"{device} is not in round {self.config.round}'s roster"
        try:
            msg = decode(payload)
            if msg.header.sender != i:
                return f"message signed as client {msg.header.sender} came on {device}'s outbox"
            self.server.receive(msg)
        except SecAggError as exc:  # forged, replayed, wrong round or stage, malformed
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._note_culprits()
        self.received.add(device)
        return None

    def take_blame(self) -> list[tuple[str, Blame]]:
        """The devices excluded since the last call, and why (each once)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def _note_culprits(self) -> None:
        for i, blame in self.server.culprits.items():
            device = self.devices[i]
            if device not in self.excluded:
                self.excluded[device] = blame
                self._fresh.append((device, blame))
        self.expected -= self.excluded.keys()  # nothing more is taken from them

    def poll(self, now: float, online: set[str] | None = None) -> Event | None:
        """Close the current stage if everyone asked has answered or its deadline passed;
        with `online` (the devices whose status says so), also once every device still
        awaited is offline: a device whose will fired (its connection gone without a word)
        or that said it left will not answer this stage in time, and waiting out the
        deadline for it costs every other device that time; it is a dropout either way."""
        if self.finished:
            return None
        late = now - self.stage_opened >= self.stage_timeout_s
        waiting = self.pending if online is None else self.pending & online
        if waiting and not late:
            return None
        closing = self.stage
        gone = len(self.pending)
        ev = self.close_stage(now)
        if isinstance(ev, Route) and (late or gone):
            log.info("round %d: %s closed %s with %d answers", self.config.round, closing.name,
                     "at its deadline" if late else f"early: the {gone} awaited are offline",
                     self.log.answered[closing.name])
        return ev

    def close_stage(self, now: float) -> Event:
        """Close the current stage with the answers it has: the next stage's messages, the
        result, or the abort."""
        closing = self.stage
        self.log.seconds[closing.name] = now - self.stage_opened
        self.log.answered[closing.name] = len(self.received)
        if closing == Stage.ADVERTISE_KEYS:
            self.advertised = set(self.received)
        try:
            out = self.server.advance()
        except RoundAborted as exc:
            self.finished = True
            return Aborted(str(exc))
        finally:
            self._note_culprits()
        self.stage_opened, self.received = now, set()
        if self.stage == Stage.DONE:
            self.finished = True
            survivors = tuple(self.devices[i] for i in self.server.survivors)
            try:
                mean = self.pipeline.decode_mean(self.server.result, len(survivors))
            except SumRejected as exc:  # poisoned (or broken): no model may come of it
                return Aborted(f"round {self.config.round} aborted: the survivors' sum fails "
                               f"the aggregate check: {exc}", check=exc.check)
            except CodecError as exc:  # a survivor's input was malformed: nothing to keep
                return Aborted(f"the survivors' sum does not decode: {exc}")
            return Done(mean_delta=np.asarray(mean, dtype=np.float64), weight=len(survivors),
                        survivors=survivors)
        self.expected = {self.devices[i] for i in out} - self.excluded.keys()
        return Route(self.stage, {self.devices[i]: m.encode() for i, m in out.items()})

    @property
    def pending(self) -> set[str]:
        """The devices asked in this stage that have not answered yet."""
        return self.expected - self.received


def resume(config: RoundConfig, identity: SigningIdentity, pipeline: MeanPipeline, *,
           stage: Stage, stored: Callable[[Stage], list[tuple[str, bytes]]],
           stage_timeout_s: float, now: float) -> tuple[SecureRound, list[Route]]:
    """Rebuild a round that a previous run left at `stage` from the messages it had accepted.

    Every stage before `stage` is fed its stored messages and closed, as it was closed then
    (the stored messages include those refused as provable disruption, so their senders are
    excluded again):
    the state machine is deterministic, so it reaches the same state and makes the same
    messages (returned, in order: the last one is what the devices of `stage` were asked).
    `stage` itself gets its stored answers and a fresh deadline. Raises ResumeError if the
    stored messages do not replay (another configuration, a corrupted database).
    """
    rnd = SecureRound(config, identity, pipeline, stage_timeout_s=stage_timeout_s, now=now)
    routes: list[Route] = []
    while True:
        for device, payload in stored(rnd.stage):
            why = rnd.receive(device, payload)
            if why and device not in rnd.excluded:  # refused then too, excluding its sender
                raise ResumeError(f"stored {rnd.stage.name} message of {device} does not "
                                  f"replay: {why}")
        if rnd.stage == stage:
            break
        ev = rnd.close_stage(now)
        if not isinstance(ev, Route):
            raise ResumeError(f"replaying the stored messages ended the round before "
                              f"{stage.name}: {ev}")
        routes.append(ev)
    rnd.log = StageLog()  # the replay's timings mean nothing
    return rnd, routes


class ResumeError(LocalInputError):
    """A round cannot be set up from its configuration, or rebuilt from the stored state."""
