"""A whole secure round in memory: aggregator state machine, device participations, the task
as it travels, and devices dropping out mid-round."""

from __future__ import annotations

import numpy as np
import pytest
from support.tasks import DIM, round_setup

from genofed.agent.secure import Participation
from genofed.aggregator.secure_round import Aborted, Done, Route, SecureRound
from genofed.errors import MessageError
from genofed.protocol.schema import ModelRelease, SecureTask
from genofed.protocol.secagg import (
    SigningIdentity,
    Stage,
)

N = 10


def _run(task: SecureTask, agg: SigningIdentity, ids: dict[str, SigningIdentity],
         deltas: dict[str, np.ndarray], drop: dict[Stage, set[str]]) -> Done | Aborted:
    assert task.codec is not None and task.secagg is not None
    pipe = task.codec.pipeline(DIM)
    rng = np.random.default_rng(0)
    devices = {d: Participation(task, d, ids[d], pipe.encode(deltas[d], rng)) for d in ids}
    rnd = SecureRound(task.secagg, agg, pipe, stage_timeout_s=10.0, now=0.0)
    silent = set(drop.get(Stage.ADVERTISE_KEYS, set()))
    for d, p in devices.items():
        if d not in silent:
            assert rnd.receive(d, p.advertise()) is None
    now = 0.0
    while True:
        ev = rnd.poll(now)
        if ev is None:  # someone is silent: let the stage deadline pass
            now += 10.0
            continue
        if not isinstance(ev, Route):
            return ev
        silent |= drop.get(ev.stage, set())
        for d, payload in ev.payloads.items():
            if d not in silent:
                assert rnd.receive(d, devices[d].answer(payload)) is None




@pytest.mark.parametrize("drop", [
    {},
    # one device dies after ShareKeys, another after MaskedInputCollection
    {Stage.SHARE_KEYS: {"dev03"}, Stage.CONSISTENCY_CHECK: {"dev07"}},
    {Stage.MASKED_INPUT: {"dev01", "dev05"}},
])
def test_secure_round_equals_the_mean_of_survivors(drop: dict[Stage, set[str]]) -> None:
    task, agg, ids = round_setup()
    rng = np.random.default_rng(1)
    deltas = {d: rng.normal(0, 0.05, DIM) for d in ids}
    ev = _run(task, agg, ids, deltas, drop)
    assert isinstance(ev, Done), ev
    gone = {d for s, ds in drop.items() if s <= Stage.MASKED_INPUT for d in ds}
    assert set(ev.survivors) == set(ids) - gone
    expect = np.mean([deltas[d] for d in ev.survivors], axis=0)
    assert ev.weight == len(ev.survivors)
    # Codec precision: stochastic rounding at scale 2000 over at most N devices.
    np.testing.assert_allclose(ev.mean_delta, expect, atol=N / 2000)


def test_too_many_dropouts_abort() -> None:
    task, agg, ids = round_setup()
    rng = np.random.default_rng(2)
    deltas = {d: rng.normal(0, 0.05, DIM) for d in ids}
    ev = _run(task, agg, ids, deltas, {Stage.MASKED_INPUT: {f"dev{i:02d}" for i in range(7)}})
    assert isinstance(ev, Aborted)


def test_a_device_cannot_speak_for_another() -> None:
    task, agg, ids = round_setup(n=4, dropout=0.0)
    assert task.codec is not None and task.secagg is not None
    pipe = task.codec.pipeline(DIM)
    rnd = SecureRound(task.secagg, agg, pipe, stage_timeout_s=10.0, now=0.0)
    p0 = Participation(task, "dev00", ids["dev00"], pipe.encode(np.zeros(DIM),
                                                                np.random.default_rng(0)))
    advert = p0.advertise()
    assert "came on dev01's outbox" in str(rnd.receive("dev01", advert))
    assert "not in round" in str(rnd.receive("stranger", advert))
    assert rnd.receive("dev00", advert) is None
    assert "ReplayedMessage" in str(rnd.receive("dev00", advert))
    assert "Malformed" in str(rnd.receive("dev00", b"garbage"))


def test_task_and_model_refuse_forgery() -> None:
    task, agg, _ = round_setup(n=4)
    other = SigningIdentity.generate()
    with pytest.raises(MessageError, match="bad signature"):
        SecureTask.open(task.seal(other), agg.public, "fed")
    rel = ModelRelease("fed", 2, "ab" * 32, np.arange(-3, 4, dtype=np.int8),
                       np.array([0.5, 0.25], dtype=np.float32))
    back = ModelRelease.open(rel.seal(agg), agg.public, "fed")
    assert back.version == 2 and back.values.tolist() == list(range(-3, 4))
    with pytest.raises(MessageError, match="bad signature"):
        ModelRelease.open(rel.seal(other), agg.public, "fed")
