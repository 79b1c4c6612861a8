"""The agent's round logic as a state machine with no I/O: verified messages in, jobs out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from genofed.errors import MessageError
from genofed.protocol.schema import ModelRelease, SecureTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """Train on `weights` (model version `task.model_version`), then run round `task.round`."""

    task: SecureTask
    weights: np.ndarray


class AgentCore:
    """Tracks the latest task and model; hands out each round's job once, to the roster only.

    `joined` is the configuration digest (hex) of the round this device had joined when it
    last stopped. Its round keys lived in memory and are gone, and the aggregator already
    holds the advertisement made with them: joining again with new keys would make every
    peer's shares from this device fail to authenticate and abort the round for all. So the
    device sits that round out, a dropout the round tolerates.
    """

    def __init__(self, device: str, federation: str, panel_sha256: str, n_params: int, *,
                 joined: str | None = None) -> None:
        self.device = device
        self.federation = federation
        self.panel_sha256 = panel_sha256
        self.n_params = n_params
        self.joined = joined
        self.task: SecureTask | None = None
        self.model_version: int | None = None
        self.weights: np.ndarray | None = None
        self.done_rounds: set[int] = set()

    def on_model(self, release: ModelRelease, weights: np.ndarray) -> None:
        """Accept a verified model release (`weights` dequantized), or raise MessageError."""
        if release.panel_sha256 != self.panel_sha256:
            raise MessageError("model was trained on another panel than this device's bundle")
        if weights.size != self.n_params:
            raise MessageError(f"model has {weights.size} parameters, the bundle "
                               f"{self.n_params}")
        if self.model_version is not None and release.version < self.model_version:
            log.info("ignoring stale model version %d", release.version)
            return
        self.model_version, self.weights = release.version, weights

    def on_task(self, task: SecureTask) -> None:
        """Accept a verified task."""
        if self.task is not None and task.round < self.task.round:
            log.info("ignoring stale task for round %d", task.round)
            return
        self.task = task

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
        if t.secagg is not None and t.secagg.digest.raw.hex() == self.joined:
            log.warning("round %d: joined before this agent restarted, and its round keys are "
                        "gone: sitting it out", t.round)
            self.done_rounds.add(t.round)
            return None
        if self.weights is None or self.model_version != t.model_version:
            return None
        return Job(task=t, weights=self.weights)

    def mark_done(self, round_: int) -> None:
        self.done_rounds.add(round_)
