"""A federation in memory: the aggregator's core, devices and a broker, no MQTT and no disk.

The devices run the real device-side logic of a round (the signed task and model checked as
they arrive, `AgentCore`, the codec, the SecAgg+ client through `agent.secure.join`); only
training is replaced by `update`, a function of (device, round, weights). A device given a
`tamper` function is a poisoner: what it returns replaces the device's honest ring vector
before the masks go on (tests and benchmarks of the aggregate check); one given a `disrupt`
function changes each round message it sends (tests of blame; the daemon has neither
hook). The broker keeps retained messages, queues what is published, and redelivers to the
aggregator what it has not acknowledged. The store (`MemoryStore`) keeps what the durable
effects said, so the aggregator can be killed between any two effects (`crash_before`) and
restarted from it, as a process killed mid-round restarts from SQLite; the broker can be
killed too (`broker_losses`), losing what it had in flight. Time is virtual.

    sim = Simulation(cfg, model, devices, randomness=seeded(7))
    sim.run()             # until the configured rounds completed (or `max_ticks`)
    sim.log               # every effect applied, in order, across restarts

Later work measures scale with it; the tests check rounds, dropouts, crash recovery and
poisoning, and `genofed bench poisoning` measures what a poisoner can still do.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from genofed.agent.core import AgentCore
from genofed.agent.secure import Participation, join
from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.core import AggregatorCore
from genofed.aggregator.effects import (
    Ack,
    Count,
    Delivered,
    Effect,
    Journal,
    Publish,
    Reconnected,
    Restored,
    Ticked,
)
from genofed.aggregator.memory import MemoryStore
from genofed.aggregator.rounds import ModelSpec, Randomness, RoundRandom
from genofed.errors import GenofedError
from genofed.protocol.ring import RingVector
from genofed.protocol.schema import DeviceStatus, ModelRelease, SecureTask
from genofed.protocol.secagg import SigningIdentity, Stage
from genofed.protocol.topics import Topics

log = logging.getLogger(__name__)
Update = Callable[[str, int, np.ndarray], np.ndarray]  # (device, round, weights) -> delta
Silence = Callable[[str, int], Stage | None]  # the stage a device falls silent at, in a round
# (device, task, trained coordinates of the global model and of its delta, rng) -> the ring
# vector it sends instead of its honest encoding, or None to stay honest this round
Tamper = Callable[[str, SecureTask, np.ndarray, np.ndarray, np.random.Generator],
                  RingVector | None]
Disrupt = Callable[["SimDevice", bytes], bytes]  # a faulty device's change to a message


def seeded(seed: int) -> Randomness:
    """Randomness that a restarted aggregator draws again identically, round by round."""
    def for_round(round_: int) -> RoundRandom:
        counter = iter(range(1 << 30))
        return RoundRandom(np.random.default_rng([seed, round_]), lambda: hashlib.sha256(
            f"{seed}/{round_}/{next(counter)}".encode()).digest())
    return for_round


@dataclass
class Token:
    """One delivery to the aggregator, acknowledged by an `Ack` effect."""

    topic: str
    payload: bytes
    sim: Simulation

    def ack(self) -> None:
        self.sim.unacked.remove(self)


@dataclass
class SimDevice:
    """One device: its identity, its updates, when it falls silent, and how it poisons."""

    name: str
    identity: SigningIdentity
    update: Update
    silence: Silence = lambda device, round_: None
    tamper: Tamper | None = None
    core: AgentCore | None = None
    participation: Participation | None = None
    silent_from: Stage | None = None
    rejected: int = 0
    disrupt: Disrupt | None = None  # a faulty device's change to each round message it sends


@dataclass
class Simulation:
    """One federation, driven until its rounds are done."""

    cfg: AggregatorConfig
    model: ModelSpec
    devices: list[SimDevice]
    randomness: Randomness
    crash_before: set[int] = field(default_factory=set)  # kill it before the k-th effect
    # The broker is killed and restarted before the k-th delivery, losing every message in
    # flight (acknowledged to their publishers, not yet delivered): what a broker that saves
    # its persistence every few seconds can lose on kill -9.
    broker_losses: set[int] = field(default_factory=set)
    tick_s: float = 1.0
    identity: SigningIdentity = field(default_factory=SigningIdentity.generate)
    now: float = 0.0
    log: list[Effect] = field(default_factory=list)
    restarts: int = 0
    delivered: int = 0  # messages taken from the broker's queue (or lost with it)
    updates: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    tampered: dict[int, set[str]] = field(default_factory=dict)
    tasks: dict[int, SecureTask] = field(default_factory=dict)
    silent: dict[int, dict[str, Stage]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topics = Topics(self.cfg.federation)
        self.store = MemoryStore()
        for d in self.devices:
            self.store.devices[d.name] = d.identity.public.raw
            d.core = AgentCore(d.name, self.cfg.federation, self.model.panel_sha256,
                               self.model.n_params)
        self.retained: dict[str, bytes] = {}
        self.queue: deque[tuple[str, str, bytes]] = deque()  # (to, topic, payload)
        self.unacked: list[Token] = []
        self.by_name = {d.name: d for d in self.devices}
        self._start()
        for d in self.devices:
            self._from_device(self.topics.status(d.name), DeviceStatus(d.name, "online")
                              .encode(), retain=True)

    @property
    def journal(self) -> list[Journal]:
        return [e for e in self.log if isinstance(e, Journal)]

    def run(self, *, max_ticks: int = 100_000) -> None:
        """Deliver, answer and tick until the federation finished."""
        ticks = 0
        while not self.core.finished:
            if self.queue:
                self.delivered += 1
                if self.delivered in self.broker_losses:
                    self._broker_restart()
                    continue
                to, topic, payload = self.queue.popleft()
                if to == "aggregator":
                    token = Token(topic, payload, self)
                    self.unacked.append(token)
                    self._apply(self.core.handle(Delivered(topic, payload, token, self.now)))
                else:
                    self._device(self.by_name[to], topic, payload)
                continue
            ticks += 1
            if ticks > max_ticks:
                last = list(self.core.records)[-3:]
                raise RuntimeError(f"no end after {max_ticks} ticks: {last}")
            self.now += self.tick_s
            enrolled = dict(self.store.devices) if self.core.cohort_due(self.now) else None
            self._apply(self.core.handle(Ticked(self.now, enrolled)))

    def _broker_restart(self) -> None:
        """Lose what is in flight; every client reconnects and gets the retained messages."""
        log.info("simulated broker restart: %d messages in flight lost", len(self.queue))
        self.queue.clear()
        self.unacked = []
        for topic, payload in self.retained.items():
            if self.topics.device_of(topic) is None:  # the task and model, to every device
                self.queue.extend((d.name, topic, payload) for d in self.devices)
            elif topic.endswith("/status"):
                self.queue.append(("aggregator", topic, payload))
        self._apply(self.core.handle(Reconnected(self.now)))

    # -- the aggregator ----------------------------------------------------------------------

    def _start(self) -> None:
        """A new aggregator process on the stored state."""
        self.core = AggregatorCore(self.cfg, self.identity, self.model,
                                   randomness=self.randomness)
        effects = self.core.handle(Restored(self.store.snapshot(self.now), self.now))
        # A new connection: unacknowledged messages again, then the retained statuses.
        redo = [("aggregator", t.topic, t.payload) for t in self.unacked]
        redo += [("aggregator", t, p) for t, p in self.retained.items()
                 if self.topics.device_of(t) and t.endswith("/status")]
        self.unacked = []
        self.queue.extendleft(reversed(redo))
        self._apply(effects)

    def _apply(self, effects: list[Effect]) -> None:
        for e in effects:
            if len(self.log) + 1 in self.crash_before:
                self.crash_before.discard(len(self.log) + 1)
                self.restarts += 1
                log.info("simulated crash before effect %d: %r", len(self.log) + 1, e)
                self._start()
                return
            self.log.append(e)
            if isinstance(e, Publish):
                self._publish(e)
            elif isinstance(e, Ack):
                e.token.ack()
            elif not isinstance(e, Count):
                self.store.apply(e, self.now)

    def _publish(self, e: Publish) -> None:
        if e.retain:
            self.retained[e.topic] = e.payload
        device = self.topics.device_of(e.topic)
        targets = [device] if device is not None else [d.name for d in self.devices]
        self.queue.extend((d, e.topic, e.payload) for d in targets if d in self.by_name)

    def _from_device(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload
        self.queue.append(("aggregator", topic, payload))

    # -- the devices -------------------------------------------------------------------------

    def _device(self, d: SimDevice, topic: str, payload: bytes) -> None:
        """What `agent.daemon.Agent.handle` and `start_round` do, in memory."""
        assert d.core is not None
        fed, key = self.cfg.federation, self.identity.public
        try:
            if topic == self.topics.task:
                task = SecureTask.open(payload, key, fed)
                d.core.on_task(task)
                p = d.participation
                again = None if p is None else p.advert_again(task)
                if p is not None and again is not None and not self._silent(d, p.stage):
                    self._send(d, again)
            elif topic == self.topics.model:
                release = ModelRelease.open(payload, key, fed)
                d.core.on_model(release, self.model.layout.dequantize(release.values,
                                                                      release.scales))
            elif d.participation is not None and not self._silent(d, d.participation.stage):
                self._send(d, d.participation.answer(payload))
        except GenofedError as exc:  # a copy asked again after a restart, or a bad message
            d.rejected += 1
            log.debug("%s dropped a message on %s: %s", d.name, topic, exc)
        self._next_job(d)

    @staticmethod
    def _silent(d: SimDevice, stage: Stage) -> bool:
        return d.silent_from is not None and stage >= d.silent_from

    def _next_job(self, d: SimDevice) -> None:
        assert d.core is not None
        job = d.core.next_job()
        if job is None:
            return
        d.core.mark_done(job.task.round)
        r = job.task.round
        self.tasks[r] = job.task
        d.silent_from = d.silence(d.name, r)
        if d.silent_from is not None:
            self.silent.setdefault(r, {})[d.name] = d.silent_from
        delta = d.update(d.name, r, job.weights)
        self.updates.setdefault(r, {})[d.name] = delta
        rng = np.random.default_rng([r, int.from_bytes(d.name.encode()[:8], "big")])
        trained = self.model.layout.trained(delta)
        ring = None if d.tamper is None else d.tamper(
            d.name, job.task, self.model.layout.trained(job.weights), trained, rng)
        if ring is None:
            d.participation = join(job.task, d.name, d.identity, trained, rng)
        else:
            self.tampered.setdefault(r, set()).add(d.name)
            d.participation = Participation(job.task, d.name, d.identity, ring)
        assert job.task.secagg is not None
        d.core.mark_joined(job.task.secagg.digest.raw.hex())
        if not self._silent(d, Stage.ADVERTISE_KEYS):
            self._send(d, d.participation.advertise())

    def _send(self, d: SimDevice, payload: bytes) -> None:
        """A round message on the device's outbox (as its fault, if any, changed it)."""
        self._from_device(self.topics.outbox(d.name),
                          payload if d.disrupt is None else d.disrupt(d, payload))


def devices(n: int, update: Update, silence: Silence | None = None, *,
            seed: int = 0, tamper: Mapping[str, Tamper] | None = None) -> list[SimDevice]:
    """`n` devices named dev000, dev001, ... with identities drawn from `seed`; `tamper`
    makes the named ones poisoners."""
    def identity(i: int) -> SigningIdentity:
        return SigningIdentity.generate(
            lambda k: hashlib.shake_256(f"identity/{seed}/{i}".encode()).digest(k))

    return [SimDevice(f"dev{i:03d}", identity(i), update,
                      silence or (lambda device, round_: None),
                      (tamper or {}).get(f"dev{i:03d}")) for i in range(n)]


def clipped_mean(updates: Mapping[str, np.ndarray], keep: np.ndarray,
                 clip: float) -> np.ndarray:
    """The plain FedAvg of `updates` as the codec defines it: each update's coordinates where
    `keep` is true clipped to L2 norm `clip`, all weighing the same; the others 0. (An oracle
    for tests: it indexes the mask itself rather than use the layout's.)"""
    acc = np.zeros(int(keep.sum()))
    for delta in updates.values():
        v = np.asarray(delta, np.float64)[keep]
        norm = float(np.linalg.norm(v))
        acc += v * (clip / norm) if norm > clip else v
    out = np.zeros(keep.size)
    out[keep] = acc / len(updates)
    return out
