"""`genofed agent run`: the edge daemon. Reads local calls once, then trains when asked.

Bad local input (config, bundle, VCF, phenotypes) stops the daemon before it connects, with
exit status 1 and one line naming the file: a service manager should not restart it until a
person has fixed the file. Bad input from the network (malformed, foreign or stale messages)
is logged, counted and dropped; the daemon keeps serving.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
from nacl.signing import VerifyKey

from genofed.agent.config import AgentConfig
from genofed.agent.core import AgentCore, Job
from genofed.agent.encode import encode_dosages
from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.trainer import StepTrainer
from genofed.agent.vcf import read_dosages
from genofed.errors import GenofedError
from genofed.models.manifest import Bundle, flatten, load_bundle, unflatten
from genofed.models.signing import load_verify_key
from genofed.protocol import messages as msgs
from genofed.protocol.topics import Topics
from genofed.protocol.transport import MqttLink, Will

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalData:
    """Encoded inputs and labels of the samples that have both a genotype and a phenotype."""

    x: np.ndarray
    y: np.ndarray
    report: dict[str, object]


def load_local_data(cfg: AgentConfig, bundle: Bundle) -> LocalData:
    """Read the VCF against the bundle's panel, join phenotypes by sample, encode."""
    panel = bundle.panel()
    dos = read_dosages(cfg.vcf, panel, min_match_rate=cfg.training.min_match_rate)
    labels = read_phenotypes(cfg.phenotypes)
    rows = [i for i, s in enumerate(dos.samples) if s in labels]
    if not rows:
        raise GenofedError(f"{cfg.phenotypes}: none of the {len(dos.samples)} samples of "
                           f"{cfg.vcf} has a phenotype")
    if len(rows) < len(dos.samples):
        log.warning("%d of %d samples have no phenotype and are left out",
                    len(dos.samples) - len(rows), len(dos.samples))
    x = encode_dosages(dos.dosage[rows], panel.af)
    y = np.array([labels[dos.samples[i]] for i in rows], dtype=np.float32)
    return LocalData(x=x, y=y, report=dict(dos.report))


class Agent:
    """One device: its data, its trainer, its connection and its round state."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.bundle = load_bundle(cfg.bundle, trust=_trusted_key(cfg))
        self.data = load_local_data(cfg, self.bundle)
        if cfg.coordinator_key is None:
            log.warning("no coordinator_key in %s's config: the bundle's signature is not "
                        "checked", cfg.device_id)
        self.trainer = StepTrainer(self.bundle, threads=cfg.training.threads)
        self.topics = Topics(cfg.federation)
        self.core = AgentCore(cfg.federation, self.bundle.panel_sha256, self.bundle.n_params)
        self.rng = np.random.default_rng(cfg.training.seed)
        self.rejected = 0
        self._bytes_seen = 0
        log.info("%s: %d samples, %d panel sites, match rate %.3f", cfg.device_id,
                 self.data.x.shape[0], self.data.x.shape[1],
                 float(self.data.report.get("match_rate", float("nan"))))  # type: ignore[arg-type]

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve rounds until `stop` is set (or the federation finishes, if configured)."""
        stop = stop or threading.Event()
        status = self.topics.status(self.cfg.device_id)
        link = MqttLink(f"genofed-{self.cfg.federation}-{self.cfg.device_id}",
                        self.cfg.broker,
                        subscriptions=[self.topics.task, self.topics.model],
                        will=Will(status, _status_payload(self.cfg.device_id, "offline")))
        link.start()
        try:
            link.publish(status, _status_payload(self.cfg.device_id, "online"), retain=True)
            while not stop.is_set():
                try:
                    got = link.inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.handle(got.topic, got.payload)
                if self.core.finished and self.cfg.exit_when_finished:
                    log.info("federation finished; exiting")
                    break
                job = self.core.next_job()
                if job is not None:
                    update = self.train(job, bytes_down=link.bytes_in - self._bytes_seen)
                    self._bytes_seen = link.bytes_in
                    link.publish(self.topics.outbox(self.cfg.device_id), msgs.encode(update))
                    self.core.mark_done(job.task.round)
            link.publish(status, _status_payload(self.cfg.device_id, "offline"), retain=True)
        finally:
            link.stop()

    def handle(self, topic: str, payload: bytes) -> None:
        """Feed one message to the round state; drop and count anything malformed."""
        try:
            if topic == self.topics.task:
                self.core.on_task(msgs.decode(payload, msgs.Task))
            elif topic == self.topics.model:
                self.core.on_model(msgs.decode(payload, msgs.GlobalModel))
            else:
                raise msgs.MessageError("unexpected topic")
        except msgs.MessageError as exc:
            self.rejected += 1
            log.warning("dropped a message on %s: %s", topic, exc)

    def train(self, job: Job, *, bytes_down: int) -> msgs.Update:
        """Local epochs from the global weights; the update is the weight delta."""
        t0 = time.monotonic()
        specs = self.bundle.params
        self.trainer.set_params(unflatten(job.weights, specs))
        start_loss = self.trainer.mean_loss(self.data.x, self.data.y)
        self.trainer.train(self.data.x, self.data.y, epochs=job.task.local_epochs,
                           batch_size=job.task.batch_size, lr=job.task.lr, rng=self.rng)
        delta = flatten(self.trainer.params, specs) - job.weights
        log.info("round %d: %d examples, loss of the global model here %.4f, %.2f s",
                 job.task.round, self.data.x.shape[0], start_loss, time.monotonic() - t0)
        return msgs.Update(federation=self.cfg.federation, round=job.task.round,
                           device=self.cfg.device_id, n_examples=int(self.data.x.shape[0]),
                           mean_loss=float(start_loss), bytes_down=int(bytes_down),
                           delta=delta.astype(np.float32))


def _status_payload(device: str, state: str) -> bytes:
    return json.dumps({"device": device, "state": state}).encode()


def _trusted_key(cfg: AgentConfig) -> VerifyKey | None:
    """The coordinator's verify key from the config; without one, bundles go unchecked."""
    return None if cfg.coordinator_key is None else load_verify_key(cfg.coordinator_key)
