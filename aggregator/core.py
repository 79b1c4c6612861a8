"""The aggregator's decisions as a state machine with no I/O: events in, effects out.

    core = AggregatorCore(cfg, identity, model)
    effects = core.handle(Restored(snapshot, now))        # first, always
    effects = core.handle(Delivered(topic, payload, token, now))
    effects = core.handle(Ticked(now, enrolled))          # enrolled when core.cohort_due(now)

Inside: which devices are online and which rest after silent rounds or provable disruption
(`cohort.py`; the culprits of a round are named in the log, counted and journaled), when a
round opens and on which cohort, its SecAgg+ parameters and ring bits, the signed task
(`rounds.py`), each stage of the secure round (`secure_round.py`), the decoded mean and the
server optimizer (`optimizers.py`), the journal record, the counts. Outside, in the shell:
SQLite, MQTT, Prometheus, the clock. `effects.py` lists the effects and the order the core
keeps between them (stored before acknowledged, stored before published).

After a restart the core is rebuilt from what the store read back: the round in flight is
replayed from its sealed task and stored messages (the aggregator holds no secret of a round;
the SecAgg+ server is deterministic), its task and current requests are published again (a
device drops a copy), and a round that cannot be replayed is journaled aborted with why.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import replace

import numpy as np

from genofed.aggregator.cohort import Sidelined, select
from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.deliveries import Deliveries
from genofed.aggregator.effects import (
    Count,
    Delivered,
    Effect,
    Event,
    Journal,
    OpenRound,
    Publish,
    Reconnected,
    Restored,
    Snapshot,
    StoreModel,
    StoreRound,
    StoreStage,
)
from genofed.aggregator.flight import Flight, resume_flight
from genofed.aggregator.optimizers import OptimizerState, apply
from genofed.aggregator.privacy import BudgetSpent, PrivacyLedger
from genofed.aggregator.record import RoundRecord
from genofed.aggregator.rounds import ModelSpec, Randomness, plan_round, system_randomness
from genofed.aggregator.secure_round import Aborted, Done, Route, SecureRound
from genofed.errors import GenofedError, LocalInputError
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SigningIdentity, Stage
from genofed.protocol.topics import Topics

log = logging.getLogger(__name__)
RECORDS_KEPT = 100  # recent round records in memory (the store's journal keeps every one)


class AggregatorCore(Deliveries):
    """One federation's aggregator, driven by `handle`."""

    def __init__(self, cfg: AggregatorConfig, identity: SigningIdentity, model: ModelSpec, *,
                 randomness: Randomness = system_randomness) -> None:
        self.cfg, self.identity, self.model = cfg, identity, model
        self.randomness = randomness
        self.topics = Topics(cfg.federation)
        self.optimizer = cfg.server.optimizer_spec()
        self.version, self.weights = 0, model.initial
        self.opt_state = OptimizerState()
        self.enrolled: dict[str, bytes] = {}
        self.online: set[str] = set()
        self.sidelined = Sidelined(cfg.cohort)
        self.flight: Flight | None = None
        self.next_round = 0
        self.retry_at = math.inf  # no round before the store is read back
        self.waiting = False
        self.model_bytes = 0  # size of the release the next round trains on
        self.records: deque[RoundRecord] = deque(maxlen=RECORDS_KEPT)  # the journal has all
        self.privacy: PrivacyLedger | None = None  # [privacy] on: read back in _restore
        self.budget_spent = ""  # why no further round fits the privacy target, once none does

    @property
    def finished(self) -> bool:
        return self.version >= self.cfg.rounds.rounds or bool(self.budget_spent)

    def cohort_due(self, now: float) -> bool:
        """Whether the next Ticked(now) draws a cohort (and so wants the device table)."""
        return self.flight is None and not self.finished and now >= self.retry_at

    def handle(self, event: Event) -> list[Effect]:
        """The effects of one event, in the order the shell must apply them."""
        out: list[Effect] = []
        if isinstance(event, Restored):
            self._restore(event.snapshot, event.now, out)
            return out
        if math.isinf(self.retry_at) and self.flight is None and not self.finished:
            raise RuntimeError("the aggregator core's first event must be Restored")
        if isinstance(event, Delivered):
            self._delivered(event, out)
        elif isinstance(event, Reconnected):
            self._republish(out)
        else:
            if event.enrolled is not None:
                for gone in sorted(set(self.enrolled) - set(event.enrolled)):
                    log.warning("%s is no longer enrolled: its messages are dropped", gone)
                self.enrolled = dict(event.enrolled)
            if self.cohort_due(event.now):
                self._open_round(event.now, out)
        if self.flight is not None:
            self._poll(self.flight, event.now, out)
        return out

    # -- restart -----------------------------------------------------------------------------

    def _restore(self, s: Snapshot, now: float, out: list[Effect]) -> None:
        self.enrolled = dict(s.enrolled)
        p = self.cfg.privacy
        if p.on:
            rate = self.cfg.cohort.sampling_rate
            self.privacy = PrivacyLedger.restore(
                p.target, p.delta, rate if rate < 1 and p.unit == "device" else None, s.spent,
                p.unit)
        if s.model is None:
            out.append(StoreModel(0, self.model.initial))
        else:
            self.version, self.weights = s.model
            if self.weights.size != self.model.n_params:
                raise LocalInputError(f"stored model version {self.version} has "
                                      f"{self.weights.size} parameters, the bundle "
                                      f"{self.model.n_params}")
        if s.moments is not None:
            self.opt_state = OptimizerState(*s.moments)
        # A coordinator that re-exported the bundle with a tighter mask (same shape) restarts
        # the aggregator on it: no published model may carry a pruned weight.
        moved = self.model.zero_pruned(self.weights, self.opt_state)
        if moved:
            log.warning("model version %d had %d non-zero weights the bundle prunes: zeroed",
                        self.version, moved)
        self.next_round = s.next_round
        if s.in_flight is not None:
            self._recover(s.in_flight, now, out)
        self._publish_model(out)
        f = self.flight
        if f is not None:  # a device that had the task or a request drops the copy
            self._publish(self.topics.task, f.sealed, out, retain=True)
            self._route(f, f.unanswered(), out)
        self.retry_at = now + self.cfg.rounds.retry_s  # let retained statuses arrive first
        if self.finished:
            self._publish_state("finished", out)

    def _republish(self, out: list[Effect]) -> None:
        """The retained model and task again, as stored, and the current stage's request to
        each device that has not answered it (after the broker came back: it may have lost
        them, or the answers, since its last save)."""
        self._publish_model(out)
        if self.flight is not None:
            self._publish(self.topics.task, self.flight.sealed, out, retain=True)
            self._route(self.flight, self.flight.unanswered(), out)
        elif self.waiting or self.finished:
            self._publish_state("finished" if self.finished else "waiting", out)

    def _recover(self, left: OpenRound, now: float, out: list[Effect]) -> None:
        try:
            self.flight = resume_flight(left, self.cfg, self.identity, self.version,
                                        self.model.n_trained, now)
            out.append(Count("resumed"))
        except GenofedError as exc:  # ResumeError, a forged task, a stored message refused
            reason = f"aggregator restarted; the round could not be resumed: {exc}"
            rec = RoundRecord(round=left.round, model_version=left.model_version,
                              status="aborted", participants=0, devices=(), examples=0,
                              mean_loss=float("nan"), bytes_up=0, bytes_down=0,
                              seconds=left.age_s, reason=reason)
            self._journal(Journal(rec), out)
            log.warning("round %d was in flight when the aggregator stopped: %s", left.round,
                        reason)

    # -- rounds ------------------------------------------------------------------------------

    def _open_round(self, now: float, out: list[Effect]) -> None:
        c, number = self.cfg, self.next_round
        resting = self.sidelined.resting(now)
        random = self.randomness(number)
        cohort = select(c.cohort, self.enrolled, self.online - resting, random.rng)
        if cohort is None:
            if not self.waiting:
                log.info("round %d waits: %d enrolled devices online (%d resting after silent "
                         "rounds), %d needed", number, len(self.online & set(self.enrolled)),
                         len(resting & set(self.enrolled)), c.cohort.min_participants)
                self._publish_state("waiting", out)
                self.waiting = True
            self.retry_at = now + c.rounds.retry_s
            return
        try:
            task = plan_round(c, number, self.version, {d: self.enrolled[d] for d in cohort},
                              self.identity.public, self.model.n_trained, random,
                              privacy=self.privacy)
        except BudgetSpent as exc:
            self.budget_spent = str(exc)
            log.warning("round %d not opened: %s; the federation is finished", number, exc)
            self._publish_state("finished", out)
            return
        assert task.codec is not None and task.secagg is not None
        rnd = SecureRound(task.secagg, self.identity, task.codec.pipeline(self.model.n_trained),
                          stage_timeout_s=c.rounds.stage_timeout_s, now=now)
        sealed = task.seal(self.identity)
        self.flight = Flight(task, sealed, rnd, now, bytes_down=self.model_bytes)
        self.next_round, self.waiting = number + 1, False
        out.append(StoreRound(number, self.version, sealed))
        self._publish(self.topics.task, sealed, out, retain=True)
        p = task.secagg.params
        log.info("round %d open on model version %d: %d devices, k=%d, t=%d, %d bits, "
                 "%d of %d coordinates trained", number, self.version, p.n, p.k, p.t,
                 task.codec.bits, self.model.n_trained, self.model.n_params)
        if task.privacy is not None:
            log.info("round %d privacy: %s", number, task.privacy.describe())

    def _poll(self, f: Flight, now: float, out: list[Effect]) -> None:
        # closing a stage may blame too (wrong shares in Unmasking)
        ev = f.rnd.poll(now, self.online if self.cfg.rounds.close_on_offline else None)
        for device, blame in f.rnd.take_blame():
            log.warning("round %d: %s (client %d) excluded for provable disruption (%s): %s",
                        f.task.round, device, blame.client, blame.kind, blame.reason)
            out.append(Count("excluded", blame.kind))
        if isinstance(ev, Route):
            log.info("round %d: %s to %d devices", f.task.round, ev.stage.name,
                     len(ev.payloads))
            out.append(StoreStage(f.task.round, ev.stage.name))  # before anyone is asked
            f.asked = dict(ev.payloads)
            self._route(f, ev.payloads, out)
        elif isinstance(ev, Done):
            update = self.model.layout.expand(ev.mean_delta)
            new = apply(self.optimizer, self.weights, update, self.opt_state)
            self._close(f, now, "completed", ev.survivors, ev.weight, "", new, update, out)
        elif isinstance(ev, Aborted):
            log.warning("%s", ev.reason)
            if ev.check:  # a poisoned sum: nothing of it becomes a model
                out.append(Count("aggregates_rejected", ev.check))
            self._close(f, now, "aborted", (), 0, ev.reason, None, None, out)

    def _route(self, f: Flight, payloads: dict[str, bytes], out: list[Effect]) -> None:
        for device, payload in payloads.items():
            f.bytes_down += self._publish(self.topics.inbox(device), payload, out)

    def _close(self, f: Flight, now: float, status: str, survivors: tuple[str, ...],
               weight: int, reason: str, new: np.ndarray | None, update: np.ndarray | None,
               out: list[Effect]) -> None:
        rec = f.record(now, self.version, status, survivors, weight, reason)
        if self.privacy is not None and f.task.privacy is not None and \
                f.rnd.stage == Stage.DONE:  # the sum was unmasked: spent, kept or not
            rec = replace(rec, privacy=self.privacy.spend(f.task,
                                                          len(f.rnd.server.survivors)))
            log.info("round %d spent privacy: %s", rec.round, self.privacy.released().describe())
        self.flight = None
        model = None if new is None else (self.version + 1, new)
        moments = (self.opt_state.m, self.opt_state.v) if self.opt_state.m.size else None
        self._journal(Journal(rec, model, moments, update), out)
        out.append(Count("dropouts", value=rec.cohort - rec.participants))
        for stage, seconds in rec.stage_seconds.items():
            out.append(Count("stage_seconds", stage, seconds))
        self.sidelined.after_round(rec.round, f.task.members(), f.rnd.advertised,
                                   {d: b.kind for d, b in f.rnd.excluded.items()}, now)
        log.info("round %d %s: %d of %d devices, weight %d, %.1f s", rec.round, status,
                 rec.participants, rec.cohort, weight, rec.seconds)
        if new is not None:
            self.version, self.weights = self.version + 1, new
            self._publish_model(out)
            if self.finished:
                self._publish_state("finished", out)

    def _journal(self, j: Journal, out: list[Effect]) -> None:
        self.records.append(j.record)
        out += [j, Count("rounds", j.record.status),
                Count("stage_seconds", "round", j.record.seconds),
                Count("participants", value=j.record.participants)]

    # -- publications ------------------------------------------------------------------------

    def _publish_model(self, out: list[Effect]) -> None:
        """The current model, INT8 and signed, retained (stored before: see effects.py)."""
        payload = self.model.release(self.cfg.federation, self.version, self.weights,
                                     self.identity, privacy=None if self.privacy is None
                                     else self.privacy.released())
        self.model_bytes = self._publish(self.topics.model, payload, out, retain=True)
        out.append(Count("model_version", value=self.version))

    def _publish_state(self, state: str, out: list[Effect]) -> None:
        task = SecureTask(self.cfg.federation, self.next_round, state, self.version)
        self._publish(self.topics.task, task.seal(self.identity), out, retain=True)

    def _publish(self, topic: str, payload: bytes, out: list[Effect], *,
                 retain: bool = False) -> int:
        out += [Publish(topic, payload, retain), Count("bytes", "down", len(payload))]
        return len(payload)
