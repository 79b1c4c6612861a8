"""The agent's service side, mixed into `Agent` (`daemon.py`): what its service manager and
its owner control. Watchdog pings while the loop turns; the owner's consent, read again when
its file changes (between messages, and between training steps); SIGHUP's reload; the global
model saved for `genofed agent predict`.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genofed import atomic
from genofed.agent import consent
from genofed.agent.conditions import RECHECK_S, read_now, unmet
from genofed.agent.config import AgentConfig, load_agent_config
from genofed.agent.notify import Notifier
from genofed.agent.roundlog import RoundLog, progress
from genofed.agent.status import StatusBoard, privacy_line
from genofed.errors import GenofedError, LocalInputError
from genofed.protocol.schema import DeviceStatus
from genofed.protocol.topics import Topics
from genofed.transport.mqtt import MqttLink, Will

if TYPE_CHECKING:
    from genofed.agent.core import AgentCore
    from genofed.agent.daemon import LocalData
    from genofed.agent.secure import Participation
    from genofed.agent.trainer import Trainer
    from genofed.models.manifest import Bundle

log = logging.getLogger("genofed.agent.daemon")


class ServiceControls:
    """The part of `Agent` that answers to systemd and to the device's owner."""

    cfg: AgentConfig
    config_path: Path | None
    notifier: Notifier
    board: StatusBoard
    rounds: RoundLog
    consent: consent.Consent
    link: MqttLink | None
    stop: threading.Event
    topics: Topics
    core: AgentCore
    bundle: Bundle
    data: LocalData
    trainers: dict[str, Trainer]
    rng: np.random.Generator
    participation: Participation | None
    _beat: float
    _waiting: bool
    _consent_seen: int | None
    _saved_version: int | None

    def start_service(self, config_path: Path | None, notifier: Notifier | None) -> None:
        """The service side's state; `self.cfg` and `self.topics` are set."""
        cfg = self.cfg
        self.config_path = config_path
        self.notifier = notifier or Notifier({})
        self.board = StatusBoard(cfg.state_dir, cfg.device_id, self.notifier)
        self.stop = threading.Event()
        self.rounds = RoundLog(cfg.state_dir, self.board, self.topics.outbox(cfg.device_id))
        self.consent = consent.read_consent(cfg.state_dir)
        self._consent_seen = mtime_ns(consent.consent_path(cfg.state_dir))
        self._saved_version = None
        self._beat = time.monotonic()
        self._waiting = False
        self.link = None
        self.sensors_root = Path("/")
        self._unmet: str | None = None  # the conditions not met at the last look
        self._looked = float("-inf")
        self._announced: str | None = None
        self.board.update(consent=self.consent.describe(time.time()),
                          privacy=privacy_line(cfg.state_dir))
        self._look_at_conditions()

    def _watchdog(self) -> None:
        """WATCHDOG=1 while the loop turns (or waits on the broker, as long as that takes):
        a loop stuck anywhere else lets systemd restart the service."""
        period = self.notifier.watchdog_s
        if period is None:
            return
        while not self.stop.wait(period / 2):
            if self._waiting or time.monotonic() - self._beat < period:
                self.notifier.ping()

    def unavailable(self) -> str | None:
        """Why this device may not join a round now (None: it may)."""
        if not self.consent.allows_joining(time.time()):
            return f"consent {self.consent.describe(time.time())}"
        return self._unmet

    def _look_at_conditions(self) -> None:
        """The owner's [conditions], read again every RECHECK_S."""
        cond = self.cfg.conditions
        now = time.monotonic()
        if not cond.any or now - self._looked < RECHECK_S:
            return
        self._looked = now
        self._unmet = unmet(cond, read_now(cond, self.sensors_root))

    def _presence(self) -> Will:
        """The status this device announces on (re)connecting: online, or offline while it
        may not join rounds (so the aggregator does not pick it only to see it drop out)."""
        state = "online" if self.unavailable() is None else "offline"
        me = self.cfg.device_id
        return Will(self.topics.status(me), DeviceStatus(me, state).encode())

    def _announce(self, link: MqttLink) -> None:
        """Publish the device's status when its availability changed, and say why."""
        why = self.unavailable()
        said = "available" if why is None else f"unavailable: {why}"
        if said == self._announced:
            return
        first, self._announced = self._announced is None, said
        self.board.update(availability=said)
        link.birth = self._presence()
        if not first or why is not None:  # the birth message said "online" already
            link.publish(link.birth.topic, link.birth.payload, retain=True)
            progress.warning("this device is now %s", said)

    def _check_consent(self, link: MqttLink) -> None:
        """Read the owner's consent again if its file changed; a withdrawal leaves the round
        in flight at once (a dropout for the aggregator). The device's status follows."""
        seen = mtime_ns(consent.consent_path(self.cfg.state_dir))
        if seen == self._consent_seen:
            return
        self._consent_seen = seen
        try:
            self.consent = consent.read_consent(self.cfg.state_dir)
        except GenofedError as exc:  # unreadable: take it as a withdrawal, never as consent
            log.error("%s; joining no round until it is fixed", exc)
            self.consent = consent.Consent(state="withdrawn", recorded=True)
        said = self.consent.describe(time.time())
        self.board.update(consent=said)
        progress.warning("consent is now %s", said)
        self._announce(link)
        meter = self.rounds.meter  # a round this device is in, training included
        if not self.consent.allows_staying() and meter is not None:
            progress.warning("round %d: consent withdrawn: leaving the round; joining no "
                             "later one", meter.round)
            self.participation = None
            self.rounds.closed("left: consent withdrawn")

    def reload(self) -> None:
        """SIGHUP: read the config again; a new VCF, phenotypes or [training] apply from the
        next round. Identity, federation, broker, bundle and state_dir need a restart."""
        if self.config_path is None:
            log.warning("reload asked, but this agent was given no config file")
            return
        try:
            new = load_agent_config(self.config_path)
            fixed = [k for k in ("device_id", "federation", "broker", "bundle", "state_dir",
                                 "aggregator_key", "coordinator_key")
                     if getattr(new, k) != getattr(self.cfg, k)]
            if fixed:
                raise LocalInputError(f"{self.config_path}: {', '.join(fixed)} changed: "
                                      f"restart the agent for that")
            from genofed.agent.daemon import load_local_data  # the daemon imports this module

            data = load_local_data(new, self.bundle)
        except GenofedError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.board.update(last_error=str(exc))
            return
        if new.training != self.cfg.training:
            self.trainers.clear()
            self.rng = np.random.default_rng(new.training.seed)
        self.cfg, self.data = new, data
        self._looked = float("-inf")  # new [conditions] count at once
        progress.warning("reloaded %s: %d samples from %s", self.config_path,
                         data.x.shape[0], new.vcf)

    def _interrupted(self) -> bool:
        """Asked between training steps: stop now, for SIGTERM or a withdrawn consent? (The
        consent file is looked at every quarter second.)"""
        now = time.monotonic()
        if now - self._beat >= 0.25:
            self._beat = now
            if self.link is not None:
                self._check_consent(self.link)
        return self.stop.is_set() or not self.consent.allows_staying()

    def _save_model(self) -> None:
        """The global model this device holds, for `genofed agent predict`."""
        v, w = self.core.model_version, self.core.weights
        if v is None or w is None or v == self._saved_version:
            return
        buf = io.BytesIO()
        np.savez(buf, version=np.int64(v), weights=w.astype(np.float32))
        try:
            atomic.write_bytes(model_path(self.cfg), buf.getvalue(), mode=0o600)
        except OSError as exc:
            log.warning("%s: cannot write the global model: %s", model_path(self.cfg), exc)
            return
        self._saved_version = v
        self.board.update(model_version=v)


def model_path(cfg: AgentConfig) -> Path:
    """Where the agent keeps the latest global model (version and flat float32 weights)."""
    return cfg.state_dir / "model.npz"


def mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
