"""The agent's round logic, driven in memory."""

import numpy as np
import pytest

from genofed.agent.core import AgentCore
from genofed.agent.encode import encode_dosages
from genofed.protocol.messages import GlobalModel, MessageError, Task

SHA = "a" * 64


def _model(version: int, n: int = 3, sha: str = SHA, fed: str = "f") -> GlobalModel:
    return GlobalModel(federation=fed, version=version, panel_sha256=sha,
                       weights=np.full(n, version, dtype=np.float32))


def _task(rnd: int, version: int, state: str = "open") -> Task:
    return Task(federation="f", round=rnd, state=state, model_version=version)


def test_job_needs_matching_model_and_comes_once() -> None:
    core = AgentCore("f", SHA, 3)
    core.on_task(_task(0, 0))
    assert core.next_job() is None  # the model has not arrived yet
    core.on_model(_model(0))
    job = core.next_job()
    assert job is not None and job.task.round == 0 and job.weights[0] == 0
    core.mark_done(0)
    assert core.next_job() is None
    core.on_model(_model(1))
    core.on_task(_task(1, 1))
    job = core.next_job()
    assert job is not None and job.weights[0] == 1
    core.on_model(_model(0))  # a stale retained model must not replace a newer one
    assert core.model is not None and core.model.version == 1


def test_closed_and_finished_tasks_give_no_job() -> None:
    core = AgentCore("f", SHA, 3)
    core.on_model(_model(0))
    core.on_task(_task(0, 0, state="closed"))
    assert core.next_job() is None and not core.finished
    core.on_task(_task(0, 0, state="finished"))
    assert core.finished


@pytest.mark.parametrize("model, reason", [
    (_model(0, fed="other"), "federation"),
    (_model(0, sha="b" * 64), "another panel"),
    (_model(0, n=4), "parameters"),
])
def test_foreign_models_refused(model: GlobalModel, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        AgentCore("f", SHA, 3).on_model(model)


def test_encoding_standardizes_and_imputes_2p() -> None:
    af = np.array([0.5, 0.1])
    d = np.array([[0.0, 2.0], [np.nan, 0.0], [2.0, np.nan]], dtype=np.float32)
    x = encode_dosages(d, af)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], [-1 / np.sqrt(0.5) * 1, 0.0, 1 / np.sqrt(0.5)],
                               rtol=1e-6)
    assert x[1, 0] == 0.0 and x[2, 1] == 0.0  # missing -> 2p -> 0 after standardizing
    np.testing.assert_allclose(x[0, 1], (2 - 0.2) / np.sqrt(2 * 0.1 * 0.9), rtol=1e-6)
