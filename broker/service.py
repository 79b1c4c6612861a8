"""`genofed aggregator run`: drives FedAvg rounds over MQTT.

The loop: publish the model (retained), open a round with a retained task, collect updates
from device outboxes until the round closes, average, publish the next model. State lives in
`state_dir/aggregator.db` (`broker/store.py`): an update is stored before it is acknowledged
to the broker, and a model version is stored, with its round's record, before it is
published. After a restart the service resumes the round in flight from what it stored, and
the broker redelivers whatever it had not acknowledged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from genofed.broker.config import AggregatorConfig
from genofed.broker.metrics import Metrics
from genofed.broker.rounds import FedAvgRounds, RoundRecord
from genofed.broker.store import Store
from genofed.errors import GenofedError
from genofed.models.manifest import flatten, load_bundle
from genofed.protocol import messages as msgs
from genofed.protocol.topics import Topics
from genofed.protocol.transport import MqttLink

log = logging.getLogger(__name__)


class Aggregator:
    """The aggregator service of one federation."""

    def __init__(self, cfg: AggregatorConfig) -> None:
        self.cfg = cfg
        self.bundle = load_bundle(cfg.bundle)
        self.topics = Topics(cfg.federation)
        self.store = Store(state_path(cfg.state_dir))
        latest = self.store.latest_model()
        if latest is None:
            latest = (0, flatten(self.bundle.initial_params(), self.bundle.params))
            self.store.put_model(*latest)
        version, weights = latest
        if weights.size != self.bundle.n_params:
            raise GenofedError(f"{self.store.path}: stored model has {weights.size} "
                               f"parameters, the bundle {self.bundle.n_params}")
        self.rounds = FedAvgRounds(cfg.rounds, weights, version=version,
                                   next_round=self.store.next_round())
        self.rejected = 0
        self.records: list[RoundRecord] = []
        self.metrics = Metrics()
        self.metrics.model_version.set(version)

    def run(self, stop: threading.Event | None = None) -> list[RoundRecord]:
        """Run all configured rounds (or until `stop`); returns the round records."""
        stop = stop or threading.Event()
        link = MqttLink(f"genofed-{self.cfg.federation}-aggregator", self.cfg.broker,
                        subscriptions=[self.topics.all_outboxes], manual_ack=True)
        if self.cfg.metrics_port:
            self.metrics.serve(self.cfg.metrics_port)
        link.start()
        try:
            self._publish_model(link)
            if not self.rounds.finished:
                self._open_round(link)
            while not stop.is_set() and not self.rounds.finished:
                try:
                    got = link.inbox.get(timeout=0.2)
                    self.handle(got.topic, got.payload)
                    got.ack()  # only now: the update is in the store, or was refused
                except queue.Empty:
                    pass
                record = self.rounds.poll(time.time())
                if record is None:
                    continue
                self._close(record)
                if record.status == "completed":
                    self._publish_model(link)
                if not self.rounds.finished:
                    self._open_round(link)
            self._publish_task(link, state="finished")
        finally:
            link.stop()
            self.metrics.stop()
        return self.records

    def handle(self, topic: str, payload: bytes) -> None:
        """Offer one outbox message to the open round; drop and count anything invalid."""
        device = self.topics.device_of(topic)
        try:
            update = msgs.decode(payload, msgs.Update)
            if device is None or update.device != device:
                raise msgs.MessageError(f"update names device {update.device!r} but came on "
                                        f"{topic}")
            if update.federation != self.cfg.federation:
                raise msgs.MessageError(f"update for federation {update.federation!r}")
        except msgs.MessageError as exc:
            self._reject("malformed", f"dropped a message on {topic}: {exc}")
            return
        why = self.rounds.offer(update, len(payload))
        if why:
            self._reject("refused", f"refused an update from {device}: {why}")
            return
        self.metrics.accepted.labels("update").inc()
        self.store.put_message(update.round, "update", device, payload)
        log.info("round %d: update from %s (%d examples)", update.round, device,
                 update.n_examples)

    def _reject(self, reason: str, text: str) -> None:
        self.rejected += 1
        self.metrics.rejected.labels(reason).inc()
        log.warning("%s", text)

    def _open_round(self, link: MqttLink) -> None:
        flight = self.store.open_round_in_flight()
        if flight is not None and flight.model_version == self.rounds.version:
            r = self.rounds.open(flight.opened, round_=flight.round)
            stored = self.store.messages(r, "update")
            for _, payload in stored:
                self.rounds.offer(msgs.decode(payload, msgs.Update), len(payload))
            log.info("resumed round %d with the %d updates stored before the restart", r,
                     len(stored))
        else:
            if flight is not None:  # opened on a model that was since replaced: void it
                self.store.close_round(flight.round, "aborted", {})
            r = self.rounds.open(time.time())
            self.store.open_round(r, self.rounds.version, time.time())
            log.info("round %d open on model version %d", r, self.rounds.version)
        self._publish_task(link, state="open")

    def _publish_task(self, link: MqttLink, *, state: str) -> None:
        p = self.cfg.rounds
        cur = self.rounds.current
        task = msgs.Task(federation=self.cfg.federation,
                         round=cur.round if cur else self.rounds.version, state=state,
                         model_version=self.rounds.version, local_epochs=p.local_epochs,
                         batch_size=p.batch_size, lr=p.lr, deadline_s=p.round_timeout_s)
        link.publish(self.topics.task, msgs.encode(task), retain=True)

    def _publish_model(self, link: MqttLink) -> None:
        version = self.rounds.version
        model = msgs.GlobalModel(federation=self.cfg.federation, version=version,
                                 panel_sha256=self.bundle.panel_sha256,
                                 weights=self.rounds.weights)
        payload = msgs.encode(model)
        link.publish(self.topics.model, payload, retain=True)
        self.metrics.bytes.labels("down").inc(len(payload))
        self.metrics.model_version.set(version)

    def _close(self, record: RoundRecord) -> None:
        self.records.append(record)
        new = (self.rounds.version, self.rounds.weights) if record.status == "completed" \
            else None
        self.store.close_round(record.round, record.status, asdict(record), new_model=new)
        self.metrics.round_closed(record, expected=self.cfg.rounds.target_updates)
        log.info("round %d %s: %d participants, loss %.4f, %.1f s", record.round,
                 record.status, record.participants, record.mean_loss, record.seconds)


def state_path(state_dir: Path) -> Path:
    """The aggregator's database under its state directory."""
    return state_dir / "aggregator.db"


def read_journal(state_dir: Path) -> list[dict[str, object]]:
    """The records of the rounds closed so far (read-only; safe while the service runs)."""
    if not state_path(state_dir).exists():
        return []
    store = Store(state_path(state_dir))
    try:
        return store.journal()
    finally:
        store.close()


def read_model(state_dir: Path, version: int) -> np.ndarray:
    """Model `version` as the aggregator stored it."""
    store = Store(state_path(state_dir))
    try:
        return store.model(version)
    finally:
        store.close()
