"""`genofed agent run`: the edge daemon. Reads local calls once, then trains when asked.

Bad local input (config, bundle, VCF, phenotypes, a missing identity) stops the daemon before
it connects, with exit status 1 and one line naming the file: a service manager should not
restart it until a person has fixed the file. Bad input from the network (unsigned, forged,
malformed, foreign or stale messages) is logged, counted and dropped; the daemon keeps serving.

One round: the signed task names this device in its SecAgg+ roster; the device trains on the
signed INT8 model the task names, with the local optimizer the task names (its state fresh
every round; the backend from `[training] backend`), encodes its delta into the ring (only the
coordinates the bundle's pruning mask trains: pruned ones are zero everywhere), and answers
the round's stages one by one: its advertisement on its outbox, then one answer per message
routed to its inbox. Only masked values leave the device. A task whose optimizer this bundle
(or backend) cannot train is skipped with a warning. The round keys live in memory only; the
configuration digest of the round joined is written to `state_dir/joined-round` before the
advertisement goes out, so an agent restarted mid-round sits that round out (`AgentCore`).

As a service (`agent/unit.py`): it tells the service manager it is ready, alive (watchdog)
and what it does (sd_notify, `notify.py`); SIGTERM (`stop`) leaves a round at any point,
training included, and publishes its offline status; SIGHUP (`reload`) reads the config and
the VCF again without a restart. It joins rounds only while its owner's consent allows
(`consent.py`: a withdrawal leaves the round in flight), writes the global model it holds
to `state_dir/model.npz` (`genofed agent predict`), its status to `status.json`, and each
round's cost and audit entry (`roundlog.py`). A round with differential privacy is joined
only within the owner's epsilon caps, and its cost goes into the device's ledger before the
advertisement goes out (`ledger.py`).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nacl.signing import VerifyKey

from genofed import atomic
from genofed.agent import ledger
from genofed.agent.config import AgentConfig, identity_path
from genofed.agent.core import AgentCore, Job
from genofed.agent.dpsgd import DpStepTrainer
from genofed.agent.encode import encode_dosages
from genofed.agent.notify import Notifier
from genofed.agent.ort_training import make_trainer
from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.roundlog import progress
from genofed.agent.secure import Participation, join
from genofed.agent.service import ServiceControls
from genofed.agent.status import privacy_line
from genofed.agent.trainer import Trainer
from genofed.agent.vcf import read_dosages
from genofed.errors import GenofedError, LocalInputError, MessageError
from genofed.models.manifest import Bundle, load_bundle
from genofed.models.signing import load_signing_key, load_verify_key
from genofed.protocol.schema import DeviceStatus, ModelRelease, SecureTask
from genofed.protocol.secagg import IdentityKey, RoundAborted, SigningIdentity
from genofed.protocol.secagg.keys import IdentitySeed
from genofed.protocol.topics import Topics
from genofed.transport.mqtt import LinkStopped, MqttLink, Will

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
        raise LocalInputError(f"{cfg.phenotypes}: none of the {len(dos.samples)} samples of "
                              f"{cfg.vcf} has a phenotype")
    if len(rows) < len(dos.samples):
        log.warning("%d of %d samples have no phenotype and are left out",
                    len(dos.samples) - len(rows), len(dos.samples))
    x = encode_dosages(dos.dosage[rows], panel.af)
    y = np.array([labels[dos.samples[i]] for i in rows], dtype=np.float32)
    return LocalData(x=x, y=y, report=dict(dos.report))


def load_identity(cfg: AgentConfig) -> SigningIdentity:
    """The device's Ed25519 identity; LocalInputError naming the file if it was never made."""
    path = identity_path(cfg)
    if not path.exists():
        raise LocalInputError(f"{path}: no device identity; run `genofed agent enroll --config "
                              f"...` and enroll its public key with the aggregator")
    return SigningIdentity(IdentitySeed(load_signing_key(path).encode()))


class Agent(ServiceControls):
    """One device: its data, its trainer, its identity, its connection and its round state."""

    def __init__(self, cfg: AgentConfig, *, config_path: Path | None = None,
                 notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.identity = load_identity(cfg)
        self.aggregator = IdentityKey(bytes(load_verify_key(cfg.aggregator_key)))
        self.bundle = load_bundle(cfg.bundle, trust=_trusted_key(cfg))
        self.data = load_local_data(cfg, self.bundle)
        if cfg.coordinator_key is None:
            log.warning("no coordinator_key in %s's config: the bundle's signature is not "
                        "checked", cfg.device_id)
        if cfg.training.backend == "ort-training" and self.bundle.ort is None:
            raise LocalInputError(f"{cfg.bundle}: exported without onnxruntime-training artifacts;"
                                  " [training] backend = \"ort-training\" needs them")
        self.trainers: dict[str, Trainer] = {}  # by optimizer, made when a task first names it
        self.layout = self.bundle.layout  # pruned coordinates never change: they are not sent
        self.topics = Topics(cfg.federation)
        self.core = AgentCore(cfg.device_id, cfg.federation, self.bundle.panel_sha256,
                              self.layout.n_params, joined=_read_joined(joined_path(cfg)))
        self.rng = np.random.default_rng(cfg.training.seed)
        self.participation: Participation | None = None
        self.rejected = 0
        self.start_service(config_path, notifier)
        log.info("%s: %d samples, %d panel sites, match rate %.3f", cfg.device_id,
                 self.data.x.shape[0], self.data.x.shape[1],
                 float(self.data.report.get("match_rate", float("nan"))))  # type: ignore[arg-type]

    def run(self, stop: threading.Event | None = None,
            reload: threading.Event | None = None) -> None:
        """Serve rounds until `stop` is set (or the federation finishes, if configured);
        read the config again whenever `reload` is set."""
        stop = self.stop = stop or threading.Event()
        reload = reload or threading.Event()
        me = self.cfg.device_id
        status = self.topics.status(me)
        link = self.link = MqttLink(f"genofed-{self.cfg.federation}-{me}", self.cfg.broker,
                        subscriptions=[self.topics.task, self.topics.model,
                                       self.topics.inbox(me)],
                        will=Will(status, DeviceStatus(me, "offline").encode()),
                        birth=self._presence(), stop=stop)
        self.notifier.ready("waiting for the broker")
        self.board.update(state="waiting for the broker")
        watchdog = threading.Thread(target=self._watchdog, daemon=True, name="watchdog")
        watchdog.start()
        try:
            self._waiting = True
            link.start()  # waits for the broker as long as it takes, saying why
            self._waiting = False
            self.board.update(state="idle", connected=True)
            while not stop.is_set():
                self._beat = time.monotonic()
                if reload.is_set():
                    reload.clear()
                    self.reload()
                self._check_consent(link)
                self._look_at_conditions()
                self._announce(link)
                self.board.update(connected=link.connected)
                try:
                    got = link.inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if got.topic == self.topics.inbox(me):
                    self.rounds.received(len(got.payload))
                reply = self.handle(got.topic, got.payload, redelivered=got.dup)
                if reply is not None:
                    self.send(link, reply)
                if self.core.finished and self.cfg.exit_when_finished:
                    log.info("federation finished; exiting")
                    break
                job = self.core.next_job()
                if job is not None:
                    self.core.mark_done(job.task.round)
                    why = self.unavailable() or self.consent.refuses(job.task.use) or \
                        self._over_cap(job.task)
                    if why is not None:
                        progress.warning("round %d: not joining: %s", job.task.round, why)
                        continue
                    advert = self.start_round(job)
                    if advert is not None and self._mark_joined(job):
                        self.send(link, advert)
                        self.rounds.joined()
                    else:
                        self.rounds.closed("did not join")
            self.rounds.closed("left: the agent was stopped" if stop.is_set()
                               else "left: the federation finished")
            self._waiting = True
            link.publish(status, DeviceStatus(me, "offline").encode(), retain=True)
        except LinkStopped as exc:  # asked to stop while the broker was away
            log.info("%s", exc)
            self.rounds.closed("left: the agent was stopped")
        finally:
            link.stop()
            self.board.update(state="offline", connected=False)
            self.notifier.stopping("stopped")

    def _over_cap(self, task: SecureTask) -> str | None:
        """Why the owner's epsilon caps keep this device out of `task`'s round, if they do
        (an unreadable ledger keeps it out too: it must not read as nothing spent)."""
        try:
            return ledger.refuses(task, self.consent, self.cfg.state_dir)
        except LocalInputError as exc:
            return str(exc)

    def _mark_joined(self, job: Job) -> bool:
        """Write the round's digest before its keys are committed to (a restarted agent must
        not join again), and its privacy cost to the ledger; a device that cannot write them
        (a full disk) sits the round out."""
        assert job.task.secagg is not None
        kept = self.core.mark_joined(job.task.secagg.digest.raw.hex())
        try:
            atomic.write_bytes(joined_path(self.cfg), "\n".join(kept).encode() + b"\n")
            spent = ledger.record(self.cfg.state_dir, job.task)
        except (OSError, LocalInputError) as exc:
            log.error("round %d: sitting it out: cannot write %s: %s", job.task.round,
                      joined_path(self.cfg), getattr(exc, "strerror", None) or exc)
            self.participation = None
            return False
        if spent is not None:
            self.rounds.spent(spent["epsilon_round"])
            self.board.update(privacy=privacy_line(self.cfg.state_dir))
            progress.info("round %d: spends epsilon %.3g (this device: %.3g in total, %.3g in "
                          "this study)", job.task.round, spent["epsilon_round"],
                          spent["epsilon_total"], spent["epsilon_study"])
        return True

    def send(self, link: MqttLink, payload: bytes) -> None:
        """Publish one round message (an advertisement or a stage answer) on the outbox; returns
        once the broker has acknowledged it."""
        self._waiting = True
        try:
            link.publish(self.topics.outbox(self.cfg.device_id), payload)
        finally:
            self._waiting = False
        self.rounds.sent(len(payload))
        if self.participation is not None and self.participation.done:
            self.rounds.closed("answered every stage")

    def handle(self, topic: str, payload: bytes, *, redelivered: bool = False) -> bytes | None:
        """Feed one message to the round state; returns the answer to send, if any. Drops
        and counts anything unsigned, forged or malformed."""
        fed = self.cfg.federation
        try:
            if topic == self.topics.task:
                task = SecureTask.open(payload, self.aggregator, fed)
                self.core.on_task(task, redelivered=redelivered)
                if self.participation is not None:
                    return self.participation.advert_again(task)
            elif topic == self.topics.model:
                release = ModelRelease.open(payload, self.aggregator, fed)
                self.core.on_model(release, self.model_weights(release),
                                   redelivered=redelivered)
                self._save_model()
            elif topic == self.topics.inbox(self.cfg.device_id):
                if self.participation is None:
                    raise MessageError("no round in progress")
                try:
                    answer = self.participation.answer(payload)
                except RoundAborted as exc:
                    self.rounds.closed(f"aborted: {exc}")
                    raise
                if self.participation.done:
                    log.info("round %d: answered every stage", self.participation.round)
                return answer
            else:
                raise MessageError("unexpected topic")
        except GenofedError as exc:  # MessageError, or a round this device gave up (RoundAborted)
            self.rejected += 1
            log.warning("dropped a message on %s: %s", topic, exc)
        return None

    def model_weights(self, release: ModelRelease) -> np.ndarray:
        """A verified release as the flat float32 weights the trainer takes; a MessageError if
        it does not fit this bundle's layout."""
        try:
            return self.layout.dequantize(release.values, release.scales)
        except LocalInputError as exc:
            raise MessageError(f"model version {release.version}: {exc}") from None

    def start_round(self, job: Job) -> bytes | None:
        """Train, encode the delta's unpruned coordinates into the ring, and join the round:
        its advertisement."""
        task = job.task
        assert task.codec is not None
        try:
            self.trainer(task.training.optimizer, dpsgd=task.training.dpsgd is not None)
        except LocalInputError as exc:  # the bundle cannot train the task's optimizer here
            log.warning("round %d: cannot take part: %s", task.round, exc)
            return None
        assert task.secagg is not None
        self.rounds.opened(task.round, task.secagg.digest.raw.hex(), task.model_version,
                           int(self.data.x.shape[0]))
        delta, _ = self.train(job)  # every update counts equally: the count stays here
        self.rounds.phase("train")
        if self.stop.is_set() or not self.consent.allows_staying():
            self.rounds.closed("left: the agent was stopped" if self.stop.is_set()
                               else "left: consent withdrawn")
            return None
        rng = np.random.default_rng(secrets.randbits(128))
        try:
            self.participation = join(task, self.cfg.device_id, self.identity,
                                      self.layout.trained(delta), rng)
        except GenofedError as exc:  # the update does not fit the task's codec or roster
            log.warning("round %d: cannot take part: %s", task.round, exc)
            return None
        advert = self.participation.advertise()
        self.rounds.phase("join")
        return advert

    def trainer(self, optimizer: str, *, dpsgd: bool = False) -> Trainer:
        """The trainer of `optimizer` on the configured backend (with `dpsgd`, the bundle's
        DP-SGD step through onnxruntime, whatever the backend), made on first use; a
        LocalInputError if the bundle (or backend) has no such optimizer."""
        key = f"dpsgd-{optimizer}" if dpsgd else optimizer
        if key not in self.trainers:
            self.trainers[key] = DpStepTrainer(
                self.bundle, threads=self.cfg.training.threads, optimizer=optimizer) \
                if dpsgd else make_trainer(self.bundle, backend=self.cfg.training.backend,
                                           optimizer=optimizer,
                                           threads=self.cfg.training.threads)
        return self.trainers[key]

    def train(self, job: Job) -> tuple[np.ndarray, int]:
        """Local epochs with the task's optimizer from the global weights, its state fresh at
        zero (set_weights restarts it); returns the weight delta (float64, every coordinate)
        and example count."""
        t0 = time.monotonic()
        spec = job.task.training
        trainer = self.trainer(spec.optimizer, dpsgd=spec.dpsgd is not None)
        trainer.set_weights(job.weights)
        start_loss = trainer.mean_loss(self.data.x, self.data.y)
        if spec.dpsgd is not None:  # record-level DP: Poisson batches, noise from the OS
            assert isinstance(trainer, DpStepTrainer)
            total = spec.dpsgd_steps
            done = trainer.train_dp(self.data.x, self.data.y, dp=spec.dpsgd, steps=total,
                                    lr=spec.lr, interrupt=self._interrupted)[1].steps
        else:
            done = len(trainer.train(self.data.x, self.data.y, epochs=spec.local_epochs,
                                     batch_size=spec.batch_size, lr=spec.lr, rng=self.rng,
                                     interrupt=self._interrupted))
            total = spec.local_epochs * -(-self.data.x.shape[0] // spec.batch_size)
        if done < total:
            progress.warning("round %d: training interrupted after %d of %d steps",
                             job.task.round, done, total)
        delta = np.subtract(trainer.weights(), job.weights, dtype=np.float64)
        log.info("round %d: %d examples, %s (%s), loss of the global model here %.4f, %.2f s",
                 job.task.round, self.data.x.shape[0], spec.optimizer,
                 self.cfg.training.backend, start_loss, time.monotonic() - t0)
        return delta, int(self.data.x.shape[0])


def joined_path(cfg: AgentConfig) -> Path:
    """Where the agent keeps the configuration digests of the last rounds it joined."""
    return cfg.state_dir / "joined-round"


def _read_joined(path: Path) -> tuple[str, ...]:
    """The digests in `path`; a damaged file is ignored (it only ever saves a round)."""
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: unreadable, ignored: %s", path, exc)
        return ()
    good = tuple(x for x in lines if len(x) == 64 and all(c in "0123456789abcdef" for c in x))
    if len(good) != len(lines):
        log.warning("%s: %d lines are not round digests, ignored", path, len(lines) - len(good))
    return good


def _trusted_key(cfg: AgentConfig) -> VerifyKey | None:
    """The coordinator's verify key from the config; without one, bundles go unchecked."""
    return None if cfg.coordinator_key is None else load_verify_key(cfg.coordinator_key)
