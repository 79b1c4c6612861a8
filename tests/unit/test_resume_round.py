"""An aggregator that dies at any point of a secure round and resumes from what it stored.

The simulation keeps what outlives the aggregator process: the stored messages per stage,
the stage last recorded as reached, and the broker's queue of device answers not yet handled.
At every crash point the round state machine is thrown away and rebuilt with `resume`; the
devices that had not answered the current stage are asked again, and a device asked twice
drops the copy. Each resumed round must end exactly as the uninterrupted one does.
"""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np
import pytest
from support.tasks import DIM, round_setup

from genofed.agent.secure import Participation
from genofed.aggregator.secure_round import (
    Aborted,
    Done,
    ResumeError,
    Route,
    SecureRound,
    resume,
)
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SigningIdentity, Stage

DROP = {Stage.SHARE_KEYS: {"dev03"}, Stage.CONSISTENCY_CHECK: {"dev07"}}


class Crash:
    """When to kill the aggregator: after its `after`-th accepted message, or (if `unrecorded`)
    right after the `after`-th stage closed, before that stage was recorded as reached."""

    def __init__(self, after: int, unrecorded: bool = False) -> None:
        self.after, self.unrecorded = after, unrecorded


def _drive(task: SecureTask, agg: SigningIdentity, ids: dict[str, SigningIdentity],
           crash: Crash | None) -> tuple[Done | Aborted, int]:
    """One round with DROP's devices going silent; returns its end and the copies dropped."""
    assert task.codec is not None and task.secagg is not None
    config, pipe = task.secagg, task.codec.pipeline(DIM)
    rng = np.random.default_rng(1)
    devices = {d: Participation(task, d, ids[d], pipe.encode(rng.normal(0, 0.05, DIM), rng))
               for d in ids}
    stored: dict[Stage, list[tuple[str, bytes]]] = defaultdict(list)
    reached = Stage.ADVERTISE_KEYS
    wire = deque((d, p.advertise()) for d, p in devices.items())  # the broker's queue
    silent: set[str] = set()
    copies = 0

    answered: set[bytes] = set()

    def ask(payloads: dict[str, bytes]) -> None:
        nonlocal copies
        for d, m in payloads.items():
            if d not in silent:
                answer = devices[d].answer(m)
                copies += answer in answered  # asked again: the same answer again
                answered.add(answer)
                wire.append((d, answer))

    def restart() -> SecureRound:
        new, routes = resume(config, agg, pipe, stage=reached, stored=lambda s: stored[s],
                             stage_timeout_s=10.0, now=now)
        if routes:
            ask({d: routes[-1].payloads[d] for d in new.pending})
        return new

    rnd = SecureRound(config, agg, pipe, stage_timeout_s=10.0, now=0.0)
    now, accepted, closed = 0.0, 0, 0
    while True:
        if wire:
            d, m = wire.popleft()
            stage = rnd.stage
            if rnd.receive(d, m) is None:
                stored[stage].append((d, m))
                accepted += 1
                if crash and not crash.unrecorded and accepted == crash.after:
                    rnd = restart()
            continue
        ev = rnd.poll(now)
        if ev is None:  # a silent device: let the stage deadline pass
            now += 10.0
            continue
        closed += 1
        if crash and crash.unrecorded and closed == crash.after:
            rnd = restart()  # the stage closed in memory only: nobody was asked yet
            continue
        if not isinstance(ev, Route):
            return ev, copies
        reached = ev.stage
        silent |= DROP.get(ev.stage, set())
        ask(ev.payloads)


@pytest.fixture(scope="module")
def setup() -> tuple[SecureTask, SigningIdentity, dict[str, SigningIdentity]]:
    return round_setup()


@pytest.fixture(scope="module")
def uninterrupted(setup: tuple[SecureTask, SigningIdentity, dict[str, SigningIdentity]]
                  ) -> Done:
    ev, copies = _drive(*setup, crash=None)
    assert isinstance(ev, Done) and copies == 0
    assert len(ev.survivors) == 9  # dev03 never shared its keys; dev07 sent its input
    return ev


# 10 adverts, 9 shares (dev03 is silent from ShareKeys on), 9 masked inputs, 8 endorsements
# (dev07 is silent from the consistency check on), 8 unmasking answers: 44 messages.
@pytest.mark.parametrize("after", [1, 9, 10, 11, 19, 20, 21, 28, 29, 33, 36, 37, 43, 44])
def test_resumed_after_any_stored_message_ends_as_uninterrupted(
        setup: tuple[SecureTask, SigningIdentity, dict[str, SigningIdentity]],
        uninterrupted: Done, after: int) -> None:
    ev, _ = _drive(*setup, crash=Crash(after))
    assert isinstance(ev, Done), ev
    assert ev.survivors == uninterrupted.survivors and ev.weight == uninterrupted.weight
    np.testing.assert_array_equal(ev.mean_delta, uninterrupted.mean_delta)


@pytest.mark.parametrize("stage_closed", [1, 2, 3, 4, 5])
def test_resumed_after_a_stage_closed_unrecorded_ends_as_uninterrupted(
        setup: tuple[SecureTask, SigningIdentity, dict[str, SigningIdentity]],
        uninterrupted: Done, stage_closed: int) -> None:
    ev, copies = _drive(*setup, crash=Crash(stage_closed, unrecorded=True))
    assert isinstance(ev, Done), ev
    np.testing.assert_array_equal(ev.mean_delta, uninterrupted.mean_delta)
    assert copies == 0  # the stage's requests had not gone out: nobody got one twice


def test_devices_that_had_the_request_answer_it_again_and_the_round_drops_the_copy(
        setup: tuple[SecureTask, SigningIdentity, dict[str, SigningIdentity]]) -> None:
    # Crash with the first masked input stored: the 8 others of U2 were asked, their answers
    # wait in the queue, and each of them is asked again and sends the same answer again.
    ev, copies = _drive(*setup, crash=Crash(20))
    assert isinstance(ev, Done) and copies == 8


def test_stored_messages_that_do_not_replay_refuse_to_resume(
        setup: tuple[SecureTask, SigningIdentity, dict[str, SigningIdentity]]) -> None:
    task, agg, _ = setup
    assert task.codec is not None and task.secagg is not None
    other, _, other_ids = round_setup()  # another round's configuration and devices
    assert other.codec is not None and other.secagg is not None
    p = Participation(other, "dev00", other_ids["dev00"],
                      other.codec.pipeline(DIM).encode(np.zeros(DIM), np.random.default_rng(0)))
    with pytest.raises(ResumeError, match="ADVERTISE_KEYS message of dev00 does not replay"):
        resume(task.secagg, agg, task.codec.pipeline(DIM), stage=Stage.SHARE_KEYS,
               stored=lambda s: [("dev00", p.advertise())] if s == Stage.ADVERTISE_KEYS else [],
               stage_timeout_s=10.0, now=0.0)
    with pytest.raises(ResumeError, match="ended the round before SHARE_KEYS"):
        resume(task.secagg, agg, task.codec.pipeline(DIM), stage=Stage.SHARE_KEYS,
               stored=lambda s: [], stage_timeout_s=10.0, now=0.0)
