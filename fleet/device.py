"""One virtual device of the fleet: the agent daemon's round logic, without its process.

Each device has what a real one has: its own TLS identity (a certificate the broker's ACL maps
to its name), its own Ed25519 identity, its own persistent MQTT session, its genome's encoded
dosages, and the agent's round logic: `AgentCore` decides what to do with each verified task
and model, `agent.secure.join`/`Participation` run SecAgg+ with the task's codec, and the
training goes through the bundle's step graph on onnxruntime. What the fleet shares among the
devices of one process is what costs memory and holds no secret: the bundle and ONE
onnxruntime session (`Shared.trainer`), whose weights are set afresh for every device's
training, as the daemon does for every round.

What is left out of the daemon (`agent/daemon.py`): the service manager, consent and privacy
ledgers, the VCF reader (the fleet's genomes come from the simulator in memory, one genome a
device) and the joined-round file (a virtual device never restarts mid-round).

A dropout is drawn per device: with probability `rate`, the device goes silent at one stage,
chosen uniformly among the five (before training, before its advertisement, before each of
its answers): it disconnects abruptly (its will says it is offline) and never answers again.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field

import numpy as np

from genofed.agent.core import AgentCore
from genofed.agent.secure import Participation, join
from genofed.agent.trainer import StepTrainer
from genofed.errors import GenofedError, LocalInputError, MessageError
from genofed.models.manifest import Bundle
from genofed.protocol.schema import ModelRelease, SecureTask
from genofed.protocol.secagg import IdentityKey, SigningIdentity
from genofed.protocol.topics import Topics

log = logging.getLogger(__name__)
# Where a dropout happens: -1 before training, then before the answer of that Stage (0 is the
# advertisement, 1 the shared keys, 2 the masked input, 3 the consistency check and unmasking).
DROP_POINTS = (-1, 0, 1, 2, 3)


@dataclass
class Shared:
    """What the devices of one process share: the bundle, one trainer, the aggregator's key."""

    bundle: Bundle
    federation: str
    aggregator: IdentityKey
    trainer: StepTrainer = field(init=False)
    topics: Topics = field(init=False)

    def __post_init__(self) -> None:
        self.trainer = StepTrainer(self.bundle, threads=1)
        self.topics = Topics(self.federation)


@dataclass
class Stats:
    """What one device did in the round, for the benchmark (times are time.time())."""

    got: dict[int, float] = field(default_factory=dict)  # stage -> its request arrived
    sent: dict[int, float] = field(default_factory=dict)  # stage -> its answer went out
    bytes_up: int = 0
    bytes_down: int = 0
    dropped_at: int | None = None  # the drop point reached, if it dropped
    rejected: int = 0
    train_s: float = 0.0


class VirtualDevice:
    """One device's round state: feed it (topic, payload) deliveries, publish what it returns."""

    def __init__(self, name: str, shared: Shared, identity: SigningIdentity, x: np.ndarray,
                 y: np.ndarray, *, drop_at: int | None = None, seed: int = 0) -> None:
        if drop_at is not None and drop_at not in DROP_POINTS:
            raise LocalInputError(f"fleet: drop point must be one of {DROP_POINTS}")
        self.name = name
        self.shared = shared
        self.identity = identity
        self.x, self.y = x, y
        self.drop_at = drop_at
        layout = shared.bundle.layout
        self.core = AgentCore(name, shared.federation, shared.bundle.panel_sha256,
                              layout.n_params)
        self.rng = np.random.default_rng(seed)
        self.participation: Participation | None = None
        self.stats = Stats()
        self.gone = False  # dropped out: answers nothing more
        self.delta: np.ndarray | None = None  # kept only when a test asks (`keep_delta`)
        self.keep_delta = False

    @property
    def done(self) -> bool:
        """Answered every stage, or dropped out."""
        return self.gone or (self.participation is not None and self.participation.done)

    def outbox(self) -> str:
        return self.shared.topics.outbox(self.name)

    def _drops(self, point: int) -> bool:
        if self.drop_at == point:
            self.gone = True
            self.stats.dropped_at = point
        return self.gone

    def handle(self, topic: str, payload: bytes, *, dup: bool = False) -> list[bytes]:
        """One delivery in; the round messages to publish on the outbox out (as the daemon's
        `Agent.handle`, then its job: train, join and advertise when a task names us)."""
        if self.gone:
            return []
        self.stats.bytes_down += len(payload)
        topics, fed = self.shared.topics, self.shared.federation
        out: list[bytes] = []
        try:
            if topic == topics.task:
                task = SecureTask.open(payload, self.shared.aggregator, fed)
                self.core.on_task(task, redelivered=dup)
                if self.participation is not None:
                    again = self.participation.advert_again(task)
                    if again is not None:
                        out.append(again)
            elif topic == topics.model:
                release = ModelRelease.open(payload, self.shared.aggregator, fed)
                try:
                    weights = self.shared.bundle.layout.dequantize(release.values,
                                                                    release.scales)
                except LocalInputError as exc:
                    raise MessageError(f"model version {release.version}: {exc}") from None
                self.core.on_model(release, weights, redelivered=dup)
            elif topic == topics.inbox(self.name):
                if self.participation is None:
                    raise MessageError("no round in progress")
                stage = int(self.participation.stage)
                self.stats.got.setdefault(stage, time.time())
                if self._drops(min(stage, 3)):
                    return []
                out.append(self.participation.answer(payload))
                self.stats.sent[stage] = time.time()
            else:
                raise MessageError("unexpected topic")
        except GenofedError as exc:
            self.stats.rejected += 1
            log.warning("%s: dropped a message on %s: %s", self.name, topic, exc)
        job = self.core.next_job()
        if job is not None:
            self.core.mark_done(job.task.round)
            advert = self._start(job.task, job.weights)
            if advert is not None:
                out.append(advert)
        self.stats.bytes_up += sum(len(m) for m in out)
        return out

    def _start(self, task: SecureTask, weights: np.ndarray) -> bytes | None:
        """Train on the shared session, encode the delta, join the round: the advertisement."""
        self.stats.got[-1] = time.time()
        if self._drops(-1):
            return None
        t0 = time.perf_counter()
        spec = task.training
        trainer = self.shared.trainer
        if spec.optimizer != trainer.optimizer or spec.dpsgd is not None:
            log.warning("%s: round %d: the fleet trains plain %s only", self.name, task.round,
                        trainer.optimizer)
            return None
        trainer.set_weights(weights)
        trainer.train(self.x, self.y, epochs=spec.local_epochs, batch_size=spec.batch_size,
                      lr=spec.lr, rng=self.rng)
        delta = np.subtract(trainer.weights(), weights, dtype=np.float64)
        self.stats.train_s = time.perf_counter() - t0
        if self.keep_delta:
            self.delta = delta
        if self._drops(0):
            return None
        try:
            self.participation = join(task, self.name, self.identity,
                                      self.shared.bundle.layout.trained(delta),
                                      np.random.default_rng(secrets.randbits(128)))
        except GenofedError as exc:
            log.warning("%s: round %d: cannot take part: %s", self.name, task.round, exc)
            return None
        advert = self.participation.advertise()
        self.stats.sent[0] = time.time()
        return advert
