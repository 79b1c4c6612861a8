"""The agent's round logic, driven in memory."""

import numpy as np
import pytest
from support.tasks import open_task

from genofed.agent.core import AgentCore
from genofed.agent.encode import encode_dosages
from genofed.errors import MessageError
from genofed.protocol.schema import ModelRelease, SecureTask
from genofed.protocol.secagg import (
    SigningIdentity,
)

SHA = "a" * 64
AGG = SigningIdentity.generate()
IDS = {d: SigningIdentity.generate() for d in ("me", "b", "c", "d")}


def _model(version: int, sha: str = SHA) -> ModelRelease:
    return ModelRelease("f", version, sha, np.zeros(3, np.int8), np.zeros(1, np.float32))


def _task(rnd: int, version: int, state: str = "open",
          roster: tuple[str, ...] = ("me", "b", "c")) -> SecureTask:
    if state != "open":
        return SecureTask("f", rnd, state, version)
    return open_task("f", rnd, {d: IDS[d].public for d in roster}, AGG.public, 4,
                     model_version=version)


def test_job_needs_matching_model_and_comes_once() -> None:
    core = AgentCore("me", "f", SHA, 3)
    core.on_task(_task(0, 0))
    assert core.next_job() is None  # the model has not arrived yet
    core.on_model(_model(0), np.zeros(3))
    job = core.next_job()
    assert job is not None and job.task.round == 0 and job.weights[0] == 0
    core.mark_done(0)
    assert core.next_job() is None
    core.on_model(_model(1), np.ones(3))
    core.on_task(_task(1, 1))
    job = core.next_job()
    assert job is not None and job.weights[0] == 1
    # A copy of model 0 (redelivered after a reconnection) does not replace the newer one.
    core.on_model(_model(0), np.zeros(3), redelivered=True)
    assert core.model_version == 1


def test_no_job_outside_the_roster_or_an_open_round() -> None:
    core = AgentCore("me", "f", SHA, 3)
    core.on_model(_model(0), np.zeros(3))
    core.on_task(_task(0, 0, "waiting"))
    assert core.next_job() is None and not core.finished
    without_us = _task(1, 0, roster=("b", "c", "d"))
    core.on_task(without_us)
    assert core.next_job() is None  # a round without us
    core.on_task(_task(2, 0))
    assert core.next_job() is not None
    core.on_task(_task(3, 0, state="finished"))
    assert core.finished


@pytest.mark.parametrize("weights, sha, reason", [
    (np.zeros(3), "b" * 64, "another panel"),
    (np.zeros(4), SHA, "parameters"),
])
def test_foreign_models_refused(weights: np.ndarray, sha: str, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        AgentCore("me", "f", SHA, 3).on_model(_model(0, sha), weights)


def test_encoding_standardizes_and_imputes_2p() -> None:
    af = np.array([0.5, 0.1])
    d = np.array([[0.0, 2.0], [np.nan, 0.0], [2.0, np.nan]], dtype=np.float32)
    x = encode_dosages(d, af)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], [-1 / np.sqrt(0.5) * 1, 0.0, 1 / np.sqrt(0.5)],
                               rtol=1e-6)
    assert x[1, 0] == 0.0 and x[2, 1] == 0.0  # missing -> 2p -> 0 after standardizing
    np.testing.assert_allclose(x[0, 1], (2 - 0.2) / np.sqrt(2 * 0.1 * 0.9), rtol=1e-6)


def test_round_joined_before_a_restart_is_sat_out_and_only_that_one() -> None:
    t0, t1 = _task(0, 0), _task(1, 0)
    assert t0.secagg is not None
    core = AgentCore("me", "f", SHA, 3, joined=(t0.secagg.digest.raw.hex(),))
    core.on_model(_model(0), np.zeros(3))
    core.on_task(t0)
    assert core.next_job() is None and core.next_job() is None  # round 0: its keys are gone
    core.on_task(t1)
    job = core.next_job()
    assert job is not None and job.task.round == 1
    # A round with the same number in a new federation run has another digest: joined.
    fresh = AgentCore("me", "f", SHA, 3, joined=(t0.secagg.digest.raw.hex(),))
    fresh.on_model(_model(0), np.zeros(3))
    other = _task(0, 0, roster=("me", "b", "d"))
    fresh.on_task(other)
    assert fresh.next_job() is not None


def test_an_aggregator_restored_from_a_backup_is_followed_back() -> None:
    # Rounds 0-3 ran on models 0-3; then the aggregator's state was restored from a backup
    # taken in round 2: it publishes model 2 again, resumes round 2 (which this device had
    # joined: it sits it out), then opens round 3 afresh.
    core = AgentCore("me", "f", SHA, 3)
    tasks = [_task(r, r) for r in range(4)]
    for r, t in enumerate(tasks):
        core.on_model(_model(r), np.full(3, r))
        core.on_task(t)
        assert core.next_job() is not None
        core.mark_done(r)
        assert t.secagg is not None
        core.mark_joined(t.secagg.digest.raw.hex())
    core.on_model(_model(2), np.full(3, 2))  # the same release again, not a redelivery
    core.on_task(tasks[2])
    assert core.model_version == 2 and core.next_job() is None  # joined before: sat out
    again = _task(3, 2, roster=("me", "b", "d"))  # round 3 afresh: another configuration
    core.on_task(again)
    job = core.next_job()
    assert job is not None and job.task.round == 3 and job.weights[0] == 2
    # A copy redelivered after a reconnection, no newer than what the device holds, is
    # dropped (the old round 3); one newer than it holds is taken: the device never had it.
    core.mark_done(3)
    core.on_task(_task(3, 3), redelivered=True)
    core.on_model(ModelRelease("f", 2, SHA, np.zeros(3, np.int8), np.zeros(1, np.float32)),
                  np.full(3, 9), redelivered=True)
    assert core.task == again and core.model_version == 2 and core.weights[0] == 2
    core.on_task(_task(4, 2), redelivered=True)
    assert core.task is not None and core.task.round == 4


def test_done_and_joined_rounds_stay_bounded() -> None:
    core = AgentCore("me", "f", SHA, 3)
    core.on_model(_model(0), np.zeros(3))
    for r in range(200):
        t = _task(r, 0)
        core.on_task(t)
        core.mark_done(r)
        assert t.secagg is not None
        kept = core.mark_joined(t.secagg.digest.raw.hex())
    assert len(core.done_rounds) <= 17 and len(kept) == 16
