"""`genofed aggregator run`: drives secure (SecAgg+) rounds over MQTT.

Each round: pick a cohort among the enrolled devices that are online, publish the model
(retained, INT8, signed) and the round's task (retained, signed: training, codec and SecAgg+
configuration), then feed outbox messages to the round's state machine (`secure_round.py`)
and route what it says to the devices' inboxes, stage by stage, until it yields the decoded
weighted mean update of the survivors or aborts. The server optimizer turns the mean into the
next model, which is stored with its round's record before it is published.

State lives in `state_dir/aggregator.db` (`store.py`); the identity in `state_dir/identity.key`.
Messages are acknowledged to the broker only after they were handled (and, if accepted,
stored as the round's stage progress), and a stage is recorded as reached before its messages
go out. The next start after a crash rebuilds the round in flight from its sealed task and
stored messages (`secure_round.resume`), asks again the devices that had not yet answered its
current stage, and carries on; the aggregator holds no secret of the round (its keys are the
devices'), so nothing is lost with the process. A round that cannot be rebuilt is journaled
aborted and a fresh one opens on the last stored model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict

import nacl.utils
import numpy as np

from genofed.aggregator.cohort import Sidelined, select
from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.metrics import Metrics
from genofed.aggregator.optimizers import OptimizerState, apply
from genofed.aggregator.record import RoundRecord
from genofed.aggregator.secure_round import (
    Aborted,
    Done,
    ResumeError,
    Route,
    SecureRound,
    resume,
)
from genofed.aggregator.state import load_identity, state_path
from genofed.aggregator.store import OpenRound, Store
from genofed.errors import LocalInputError, MessageError
from genofed.models.manifest import load_bundle
from genofed.protocol.codec import CodecError, choose_bits
from genofed.protocol.envelope import MAX_MESSAGE_BYTES
from genofed.protocol.roundspec import CodecSpec
from genofed.protocol.schema import DeviceStatus, ModelRelease, SecureTask
from genofed.protocol.secagg import (
    GraphSeed,
    IdentityKey,
    ParameterError,
    Participant,
    Ring,
    RoundConfig,
    SecAggError,
    Stage,
    choose_parameters,
)
from genofed.protocol.topics import Topics
from genofed.transport.mqtt import MqttLink

log = logging.getLogger(__name__)


class _Flight:
    """The round in flight: its state machine and what the journal will say of it."""

    def __init__(self, task: SecureTask, rnd: SecureRound, opened: float, down: int) -> None:
        self.task, self.rnd, self.opened = task, rnd, opened
        self.bytes_up, self.bytes_down = 0, down
        self.resend: dict[str, bytes] = {}  # a resumed stage's requests, sent once connected
        # No client message of this round can be larger: 8 bytes a ring value (masked input)
        # plus generous room per peer (encrypted shares, unmasking answers) and for headers.
        assert task.secagg is not None
        self.max_bytes = 65536 + 8 * task.secagg.length + 1024 * len(task.members())


class Aggregator:
    """The aggregator service of one federation."""

    def __init__(self, cfg: AggregatorConfig) -> None:
        self.cfg = cfg
        self.bundle = load_bundle(cfg.bundle)
        if cfg.rounds.optimizer not in self.bundle.steps:
            raise LocalInputError(f"{cfg.bundle}: no step graph for [rounds] optimizer "
                                  f"{cfg.rounds.optimizer!r} (has {', '.join(self.bundle.steps)})")
        self.topics = Topics(cfg.federation)
        self.identity = load_identity(cfg.state_dir)
        self.store = Store(state_path(cfg.state_dir))
        latest = self.store.latest_model()
        if latest is None:
            latest = (0, self.bundle.layout.flatten(self.bundle.initial_params()))
            self.store.put_model(*latest)
        self.version, self.weights = latest
        if self.weights.size != self.bundle.n_params:
            raise LocalInputError(f"{self.store.path}: stored model has {self.weights.size} "
                                  f"parameters, the bundle {self.bundle.n_params}")
        # Only the coordinates the bundle's pruning mask trains travel and are summed.
        self.layout = self.bundle.layout
        self.n_trained = self.layout.n_trained
        self.optimizer = cfg.server.optimizer_spec()
        moments = self.store.moments(self.version)
        self.opt_state = OptimizerState() if moments is None else OptimizerState(*moments)
        self.online: set[str] = set()
        self.sidelined = Sidelined(cfg.cohort)
        self.flight: _Flight | None = None
        self.retry_at = 0.0
        self.waiting = False
        self.model_bytes = 0  # size of the model release the next round trains on
        self.rng = np.random.default_rng()
        self.rejected = 0
        self.records: list[RoundRecord] = []
        self.metrics = Metrics()
        self.metrics.model_version.set(self.version)

    @property
    def finished(self) -> bool:
        return self.version >= self.cfg.rounds.rounds

    def run(self, stop: threading.Event | None = None) -> list[RoundRecord]:
        """Run rounds until the configured number completed (or `stop`); returns the records."""
        stop = stop or threading.Event()
        link = MqttLink(f"genofed-{self.cfg.federation}-aggregator", self.cfg.broker,
                        subscriptions=[self.topics.all_outboxes, self.topics.all_status],
                        manual_ack=True)
        if self.cfg.metrics_port:
            self.metrics.serve(self.cfg.metrics_port)
        self.recover()
        link.start()
        # Let the retained statuses of the devices arrive before the first cohort is drawn.
        self.retry_at = time.monotonic() + self.cfg.rounds.retry_s
        try:
            self._publish_model(link)
            if self.flight is not None and self.flight.resend:
                self._route(link, self.flight, self.flight.resend)
                self.flight.resend = {}
            while not stop.is_set() and not self.finished:
                if self.flight is None and time.monotonic() >= self.retry_at:
                    self._open_round(link)
                try:
                    got = link.inbox.get(timeout=0.1)
                    self.handle(got.topic, got.payload)
                    got.ack()  # only now: handled, and stored if it was accepted
                except queue.Empty:
                    pass
                if self.flight is not None:
                    self._step(link, self.flight)
            if self.finished:
                self._publish_task(link, SecureTask(self.cfg.federation, self.store.next_round(),
                                                    "finished", self.version).seal(self.identity))
        finally:
            link.stop()
            self.metrics.stop()
            self.store.close()
        return self.records

    def handle(self, topic: str, payload: bytes) -> None:
        """One message from a device: its status, or an outbox message for the round."""
        device = self.topics.device_of(topic)
        if device is not None and topic == self.topics.status(device):
            self._status(device, payload)
            return
        if device is None or topic != self.topics.outbox(device):
            self._reject("topic", f"dropped a message on {topic}: not a device outbox")
            return
        f = self.flight
        limit = MAX_MESSAGE_BYTES if f is None else f.max_bytes
        if len(payload) > limit:
            self._reject("oversized", f"dropped a message on {topic}: {len(payload)} bytes, "
                         f"more than the {limit} this round's messages can take")
            return
        if f is None:
            self._reject("no_round", f"dropped a message from {device}: no round is open")
            return
        stage = f.rnd.stage.name
        why = f.rnd.receive(device, payload)
        if why and self.store.message(f.task.round, stage, device) == payload:
            self._reject("duplicate", f"dropped a message from {device}: a copy of its {stage} "
                         "message (redelivered after a restart, or replayed)")
            return
        if why:
            self._reject("refused", f"dropped a message from {device}: {why}")
            return
        f.bytes_up += len(payload)
        self.metrics.accepted.labels(stage).inc()
        self.metrics.bytes.labels("up").inc(len(payload))
        self.store.put_message(f.task.round, stage, device, payload)

    def _status(self, device: str, payload: bytes) -> None:
        try:
            state = DeviceStatus.decode(payload, device).state
        except MessageError as exc:
            self._reject("malformed", f"dropped a bad status message of {device}: {exc}")
            return
        (self.online.add if state == "online" else self.online.discard)(device)
        if state == "online":
            self.sidelined.forget(device)  # connected again: worth another try
        log.info("%s is %s", device, state)

    def _reject(self, reason: str, text: str) -> None:
        self.rejected += 1
        self.metrics.rejected.labels(reason).inc()
        log.warning("%s", text)

    def recover(self) -> None:
        """Resume the round a previous run left in flight, or journal it aborted."""
        left = self.store.open_round_in_flight()
        if left is None:
            return
        try:
            self.flight = self._resume(left)
        except (ResumeError, MessageError, SecAggError, ValueError) as exc:
            reason = f"aggregator restarted; the round could not be resumed: {exc}"
            rec = RoundRecord(round=left.round, model_version=left.model_version,
                              status="aborted", participants=0, devices=(), examples=0,
                              mean_loss=float("nan"), bytes_up=0, bytes_down=0,
                              seconds=max(0.0, time.time() - left.opened), reason=reason)
            self.store.close_round(left.round, "aborted", asdict(rec))
            self.records.append(rec)
            self.metrics.rounds.labels("aborted").inc()
            log.warning("round %d was in flight when the aggregator stopped: %s", left.round,
                        reason)

    def _resume(self, left: OpenRound) -> _Flight:
        if left.task is None:
            raise ResumeError("its task was not stored")
        if left.model_version != self.version:
            raise ResumeError(f"it trains model version {left.model_version}, the newest "
                              f"stored is {self.version}")
        task = SecureTask.open(left.task, self.identity.public, self.cfg.federation)
        assert task.codec is not None and task.secagg is not None  # an open task has both
        stage = Stage.ADVERTISE_KEYS
        if left.stage is not None:
            if left.stage not in Stage.__members__:
                raise ResumeError(f"it was left at an unknown stage {left.stage!r}")
            stage = Stage[left.stage]
        rnd, routes = resume(task.secagg, self.identity, task.codec.pipeline(self.n_trained),
                             stage=stage, stored=lambda s: self.store.messages(left.round, s.name),
                             stage_timeout_s=self.cfg.rounds.stage_timeout_s,
                             now=time.monotonic())
        f = _Flight(task, rnd, time.monotonic() - max(0.0, time.time() - left.opened),
                    len(left.task) + sum(len(p) for r in routes for p in r.payloads.values()))
        f.bytes_up = sum(len(p) for s in Stage if s <= stage
                         for _, p in self.store.messages(left.round, s.name))
        if routes:  # ask again whoever has not answered (a device that had it drops a copy)
            f.resend = {d: routes[-1].payloads[d] for d in sorted(rnd.pending)}
        self.metrics.resumed.inc()
        log.warning("round %d resumed at %s from the stored messages: %d of %d answers in, "
                    "%d devices asked again", left.round, stage.name, len(rnd.received),
                    len(rnd.expected), len(f.resend))
        return f

    def _open_round(self, link: MqttLink) -> None:
        c = self.cfg
        enrolled = self.store.devices()
        resting = self.sidelined.resting(time.monotonic())
        cohort = select(c.cohort, enrolled, self.online - resting, self.rng)
        number = self.store.next_round()
        if cohort is None:
            if not self.waiting:
                log.info("round %d waits: %d enrolled devices online (%d resting after silent "
                         "rounds), %d needed", number, len(set(enrolled) & self.online),
                         len(resting & set(enrolled)), c.cohort.min_participants)
                self._publish_task(link, SecureTask(c.federation, number, "waiting",
                                                    self.version).seal(self.identity))
                self.waiting = True
            self.retry_at = time.monotonic() + c.rounds.retry_s
            return
        n = len(cohort)
        try:
            params = choose_parameters(n, c.secagg.corrupt_fraction, c.secagg.dropout_fraction)
            bits = choose_bits(n, c.codec.clip, c.codec.scale, weight_max=c.codec.weight_max)
        except (ParameterError, CodecError) as exc:
            raise LocalInputError(f"cannot set up a round of {n} devices: {exc}") from None
        codec = CodecSpec(c.codec.clip, c.codec.scale, bits, c.codec.weight_max,
                          nacl.utils.random(32))
        secagg = RoundConfig(c.federation, number,
                             tuple(Participant(d, IdentityKey(enrolled[d])) for d in cohort),
                             self.identity.public, params, Ring(bits),
                             self.n_trained + 1, GraphSeed(nacl.utils.random(32)))
        task = SecureTask(c.federation, number, "open", self.version,
                          deadline_s=c.rounds.stage_timeout_s, training=c.rounds.training(),
                          codec=codec, secagg=secagg)
        rnd = SecureRound(secagg, self.identity, codec.pipeline(self.n_trained),
                          stage_timeout_s=c.rounds.stage_timeout_s, now=time.monotonic())
        sealed = task.seal(self.identity)
        self.store.open_round(number, self.version, time.time(), sealed)
        self.flight = _Flight(task, rnd, time.monotonic(), self.model_bytes)
        self.waiting = False
        self.flight.bytes_down += self._publish_task(link, sealed)
        log.info("round %d open on model version %d: %d devices, k=%d, t=%d, %d bits, "
                 "%d of %d coordinates trained", number, self.version, n, params.k, params.t,
                 bits, self.n_trained, self.bundle.n_params)

    def _step(self, link: MqttLink, f: _Flight) -> None:
        ev = f.rnd.poll(time.monotonic())
        if isinstance(ev, Route):
            log.info("round %d: %s to %d devices", f.task.round, ev.stage.name,
                     len(ev.payloads))
            self.store.set_stage(f.task.round, ev.stage.name)  # before anyone is asked
            self._route(link, f, ev.payloads)
        elif isinstance(ev, Done):
            mean = self.layout.expand(ev.mean_delta)  # float64, as decoded
            new = apply(self.optimizer, self.weights, mean, self.opt_state)
            self._close(f, "completed", ev.survivors, ev.weight, "", new)
            self._publish_model(link)
        elif isinstance(ev, Aborted):
            log.warning("round %d aborted: %s", f.task.round, ev.reason)
            self._close(f, "aborted", (), 0, ev.reason, None)

    def _route(self, link: MqttLink, f: _Flight, payloads: dict[str, bytes]) -> None:
        for device, payload in payloads.items():
            link.publish(self.topics.inbox(device), payload)
            f.bytes_down += len(payload)
            self.metrics.bytes.labels("down").inc(len(payload))

    def _close(self, f: _Flight, status: str, survivors: tuple[str, ...], weight: int,
               reason: str, new: np.ndarray | None) -> None:
        rec = RoundRecord(round=f.task.round, model_version=self.version, status=status,
                          participants=len(survivors), devices=tuple(sorted(survivors)),
                          examples=weight, mean_loss=float("nan"), bytes_up=f.bytes_up,
                          bytes_down=f.bytes_down, seconds=time.monotonic() - f.opened,
                          cohort=len(f.task.members()), reason=reason,
                          stage_seconds=dict(f.rnd.log.seconds))
        new_model = None if new is None else (self.version + 1, new)
        moments = (self.opt_state.m, self.opt_state.v) if self.opt_state.m.size else None
        self.store.close_round(rec.round, status, asdict(rec), new_model=new_model,
                               moments=moments)
        if new is not None:
            self.version, self.weights = self.version + 1, new
        self.records.append(rec)
        self.flight = None
        self.metrics.round_closed(rec, expected=rec.cohort)
        rests = self.sidelined.round_closed(f.task.members(), f.rnd.advertised, time.monotonic())
        for device, rest_s in sorted(rests.items()):
            log.warning("%s was picked and sent nothing in %d rounds in a row: left out of "
                        "rounds for %.0f s", device, self.sidelined.silent_rounds[device], rest_s)
        log.info("round %d %s: %d of %d devices, weight %d, %.1f s", rec.round, status,
                 rec.participants, rec.cohort, weight, rec.seconds)

    def _publish_task(self, link: MqttLink, payload: bytes) -> int:
        """Publish a sealed task, retained; returns its size."""
        link.publish(self.topics.task, payload, retain=True)
        self.metrics.bytes.labels("down").inc(len(payload))
        return len(payload)

    def _publish_model(self, link: MqttLink) -> None:
        values, scales = self.layout.quantize(self.weights)
        release = ModelRelease(self.cfg.federation, self.version, self.bundle.panel_sha256,
                               values, scales)
        payload = release.seal(self.identity)
        link.publish(self.topics.model, payload, retain=True)
        self.model_bytes = len(payload)
        self.metrics.bytes.labels("down").inc(len(payload))
        self.metrics.model_version.set(self.version)
