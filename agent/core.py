"""The agent's round logic as a state machine with no I/O: verified messages in, jobs out."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from genofed.errors import MessageError
from genofed.protocol.schema import ModelRelease, SecureTask

log = logging.getLogger(__name__)
DONE_KEPT = 16  # rounds before the current one whose "done" is remembered
JOINED_KEPT = 16  # digests of the last rounds joined, kept across restarts


@dataclass(frozen=True)
class Job:
    """Train on `weights` (model version `task.model_version`), then run round `task.round`."""

    task: SecureTask
    weights: np.ndarray


class AgentCore:
    """Tracks the latest task and model; hands out each round's job once, to the roster only.

    `joined` holds the configuration digests (hex) of the last rounds this device joined, as
    `state_dir/joined-round` kept them across restarts. Their round keys lived in memory and
    are gone, and the aggregator already holds the advertisements made with them: joining
    such a round again with new keys (after a restart of this agent, or when an aggregator
    restored from a backup resumes a round it had stored) would make every peer's shares from
    this device fail to authenticate and abort the round for all. So the device sits those
    rounds out, a dropout each round tolerates.

    Staleness: MQTT delivers one topic's messages in order, so an older task or model comes
    after a newer one only as a copy the broker sends again after a reconnection (flagged
    `redelivered`, MQTT's DUP): a copy no newer than what the device holds is dropped (a
    newer one it never got is taken). A new one with a lower number means the
    aggregator went back (its state restored from a backup): the device follows it, or it
    would ignore every task for good; the rounds it remembers as done from there are
    forgotten, to be run afresh, except those it joined.
    """

    def __init__(self, device: str, federation: str, panel_sha256: str, n_params: int, *,
                 joined: tuple[str, ...] = ()) -> None:
        self.device = device
        self.federation = federation
        self.panel_sha256 = panel_sha256
        self.n_params = n_params
        self.joined: deque[str] = deque(joined, maxlen=JOINED_KEPT)
        self.task: SecureTask | None = None
        self.model_version: int | None = None
        self.weights: np.ndarray | None = None
        self.done_rounds: set[int] = set()

    def on_model(self, release: ModelRelease, weights: np.ndarray, *,
                 redelivered: bool = False) -> None:
        """Accept a verified model release (`weights` dequantized), or raise MessageError."""
        if release.panel_sha256 != self.panel_sha256:
            raise MessageError("model was trained on another panel than this device's bundle")
        if weights.size != self.n_params:
            raise MessageError(f"model has {weights.size} parameters, the bundle "
                               f"{self.n_params}")
        if self.model_version is not None and redelivered and \
                release.version <= self.model_version:
            log.info("ignoring a copy of model version %d", release.version)
            return
        if self.model_version is not None and release.version < self.model_version:
            log.warning("the aggregator went back from model version %d to %d (its state "
                        "restored from a backup?): following it", self.model_version,
                        release.version)
        self.model_version, self.weights = release.version, weights

    def on_task(self, task: SecureTask, *, redelivered: bool = False) -> None:
        """Accept a verified task."""
        if self.task is not None and redelivered and task.round <= self.task.round:
            log.info("ignoring a copy of the task of round %d", task.round)
            return
        if self.task is not None and task.round < self.task.round:
            log.warning("the aggregator went back from round %d to round %d (its state "
                        "restored from a backup?): following it", self.task.round, task.round)
            self.done_rounds = {r for r in self.done_rounds if r < task.round}
        self.task = task
        # Only rounds at or after the current one can come again: memory stays bounded.
        self.done_rounds = {r for r in self.done_rounds if r >= task.round - DONE_KEPT}

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.state == "finished"

    def next_job(self) -> Job | None:
        """The job to do now: an open round that names us, on the model it names, once."""
        t = self.task
        if t is None or t.state != "open" or t.round in self.done_rounds:
            return None
        if self.device not in t.members():
            return None
        if t.secagg is not None and t.secagg.digest.raw.hex() in self.joined:
            log.warning("round %d: joined before (before this agent restarted, or the "
                        "aggregator went back), and its round keys are gone: sitting it out",
                        t.round)
            self.done_rounds.add(t.round)
            return None
        if self.weights is None or self.model_version != t.model_version:
            return None
        return Job(task=t, weights=self.weights)

    def mark_done(self, round_: int) -> None:
        self.done_rounds.add(round_)

    def mark_joined(self, digest: str) -> tuple[str, ...]:
        """Remember a round joined; returns the digests to keep on disk."""
        self.joined.append(digest)
        return tuple(self.joined)
