"""The agent's round logic as a state machine with no I/O: messages in, jobs out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from genofed.protocol.messages import GlobalModel, MessageError, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """Train on `weights` (model version `task.model_version`) and answer for `task.round`."""

    task: Task
    weights: np.ndarray


class AgentCore:
    """Tracks the latest task and model; hands out each round's job once."""

    def __init__(self, federation: str, panel_sha256: str, n_params: int) -> None:
        self.federation = federation
        self.panel_sha256 = panel_sha256
        self.n_params = n_params
        self.task: Task | None = None
        self.model: GlobalModel | None = None
        self.done_rounds: set[int] = set()

    def on_model(self, model: GlobalModel) -> None:
        """Accept a global model for our federation and panel, or raise MessageError."""
        if model.federation != self.federation:
            raise MessageError(f"model for federation {model.federation!r}")
        if model.panel_sha256 != self.panel_sha256:
            raise MessageError("model was trained on another panel than this device's bundle")
        if model.weights.size != self.n_params:
            raise MessageError(f"model has {model.weights.size} parameters, the bundle "
                               f"{self.n_params}")
        if self.model is not None and model.version < self.model.version:
            log.info("ignoring stale model version %d", model.version)
            return
        self.model = model

    def on_task(self, task: Task) -> None:
        """Accept the current task, or raise MessageError."""
        if task.federation != self.federation:
            raise MessageError(f"task for federation {task.federation!r}")
        self.task = task

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.state == "finished"

    def next_job(self) -> Job | None:
        """The job to do now, if the open task's model has arrived and we have not answered."""
        t, m = self.task, self.model
        if t is None or t.state != "open" or t.round in self.done_rounds:
            return None
        if m is None or m.version != t.model_version:
            return None
        return Job(task=t, weights=m.weights)

    def mark_done(self, round_: int) -> None:
        self.done_rounds.add(round_)
