"""`genofed aggregator run`: drives FedAvg rounds over MQTT.

The loop: publish the model (retained), open a round with a retained task, collect updates
from device outboxes until the round closes, average, publish the next model. Every closed
round is appended to `state_dir/rounds.jsonl` and every model version written to
`state_dir/models/v<version>.npy` (atomically) before it is published.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from genofed import atomic
from genofed.broker.config import AggregatorConfig
from genofed.broker.rounds import FedAvgRounds, RoundRecord
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
        self.rounds = FedAvgRounds(cfg.rounds, flatten(self.bundle.initial_params(),
                                                       self.bundle.params))
        self.rejected = 0
        self.records: list[RoundRecord] = []
        self.journal = cfg.state_dir / "rounds.jsonl"

    def run(self, stop: threading.Event | None = None) -> list[RoundRecord]:
        """Run all configured rounds (or until `stop`); returns the round records."""
        stop = stop or threading.Event()
        link = MqttLink(f"genofed-{self.cfg.federation}-aggregator", self.cfg.broker,
                        subscriptions=[self.topics.all_outboxes])
        link.start()
        try:
            self._publish_model(link)
            self._open_round(link)
            while not stop.is_set() and not self.rounds.finished:
                try:
                    topic, payload = link.inbox.get(timeout=0.2)
                    self.handle(topic, payload)
                except queue.Empty:
                    pass
                record = self.rounds.poll(time.monotonic())
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
            self.rejected += 1
            log.warning("dropped a message on %s: %s", topic, exc)
            return
        why = self.rounds.offer(update, len(payload))
        if why:
            self.rejected += 1
            log.warning("refused an update from %s: %s", device, why)
        else:
            log.info("round %d: update from %s (%d examples)", update.round, device,
                     update.n_examples)

    def _open_round(self, link: MqttLink) -> None:
        r = self.rounds.open(time.monotonic())
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
        buf = io.BytesIO()
        np.save(buf, self.rounds.weights)
        atomic.write_bytes(model_path(self.cfg.state_dir, version), buf.getvalue())
        model = msgs.GlobalModel(federation=self.cfg.federation, version=version,
                                 panel_sha256=self.bundle.panel_sha256,
                                 weights=self.rounds.weights)
        link.publish(self.topics.model, msgs.encode(model), retain=True)

    def _close(self, record: RoundRecord) -> None:
        self.records.append(record)
        atomic.append_line(self.journal, json.dumps(asdict(record)))
        log.info("round %d %s: %d participants, loss %.4f, %.1f s", record.round,
                 record.status, record.participants, record.mean_loss, record.seconds)


def model_path(state_dir: Path, version: int) -> Path:
    """Where model `version` is kept."""
    return state_dir / "models" / f"v{version:04d}.npy"


def read_journal(state_dir: Path) -> list[dict[str, object]]:
    """The round records written so far."""
    path = state_dir / "rounds.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
