"""Blame on the aggregator's core, in memory (`aggregator/simulate.py`): a device that keeps
answering but disrupts (an all-zero key, garbage shares, a false accusation) is named in the
log, counted, journaled with the reason, excluded from the round, which completes with the
rest (its update exactly theirs), and rested by `Sidelined` (longer than a silent device, and
neither its answers nor a reconnection end the rest). A restart mid-round keeps the verdict."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from support import disrupt
from support.effect_order import check_effect_order
from support.simfed import CLIP, KEEP, LAYOUT, MODEL, config, update

from genofed.aggregator.cohort import MAX_REST_S, CohortPolicy, Sidelined
from genofed.aggregator.effects import Count, Journal
from genofed.aggregator.simulate import (
    SimDevice,
    Simulation,
    Tamper,
    clipped_mean,
    devices,
    seeded,
)

FAULTS: dict[str, Tamper] = {
    "zero key": lambda d, p: disrupt.zero_key(p, d.identity),
    "garbage shares": lambda d, p: disrupt.garbage_shares(p, d.identity),
    "false accusation": lambda d, p: p if d.participation is None else
    disrupt.false_accusation(p, d.identity, d.participation.client),
}
KINDS = {"zero key": "invalid_key", "garbage shares": "bad_shares",
         "false accusation": "false_accusation"}


def federation(n: int, culprit: str, fault: str, rounds: int,
               crash_before: set[int] | None = None) -> Simulation:
    devs: list[SimDevice] = devices(n, update, seed=n)
    for d in devs:
        if d.name == culprit:
            d.disrupt = FAULTS[fault]
    return Simulation(config(rounds), MODEL, devs, seeded(n), crash_before=crash_before or set())


def check_rounds(sim: Simulation, culprit: str, kind: str) -> None:
    """Every round completed without the culprit, its update the plain mean of the rest."""
    for j in sim.journal:
        rec = j.record
        assert rec.status == "completed", rec
        assert culprit not in rec.devices
        members = sim.tasks[rec.round].members()
        assert set(rec.devices) == set(members) - {culprit}
        ups = {d: sim.updates[rec.round][d] for d in rec.devices}
        assert j.update is not None
        np.testing.assert_allclose(j.update, clipped_mean(ups, KEEP, CLIP), atol=1e-5)
        if culprit in members:
            assert rec.excluded[culprit].startswith(f"{kind}: ")
        else:
            assert rec.excluded == {}
    assert check_effect_order(sim.log, sim.identity.public, "sim", LAYOUT) > 0


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("culprit", ["dev000", "dev003", "dev005"])
def test_a_disrupting_device_is_excluded_named_and_rested(
        fault: str, culprit: str, caplog: pytest.LogCaptureFixture) -> None:
    sim = federation(6, culprit, fault, rounds=3)
    with caplog.at_level(logging.WARNING, logger="genofed.aggregator.core"):
        sim.run()
    kind = KINDS[fault]
    check_rounds(sim, culprit, kind)
    first = sim.journal[0].record
    assert culprit in sim.tasks[first.round].members() and culprit in first.excluded
    # Rested from then on (twice a silent device's first rest, 120 s): not picked again.
    assert all(culprit not in sim.tasks[j.record.round].members() for j in sim.journal[1:])
    counted = [c for c in sim.log if isinstance(c, Count) and c.metric == "excluded"]
    assert [(c.label, c.value) for c in counted] == [(kind, 1.0)]
    text = caplog.text
    assert f"round 0: {culprit} (client {int(culprit[3:])}) excluded for provable " \
           f"disruption ({kind})" in text
    assert f"{culprit} disrupted round 0 ({kind}): left out of rounds for 120 s" in text


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_restart_mid_round_keeps_the_verdict(fault: str) -> None:
    """Killed before an effect early, midway and late in the round, the aggregator replays
    the stored messages (a refused one that blamed its sender among them) and excludes the
    same device again: the same record and the same model as without the kill."""
    reference = federation(6, "dev002", fault, rounds=1)
    reference.run()
    ref = reference.journal[-1]
    assert ref.model is not None and list(ref.record.excluded) == ["dev002"]
    n_effects = len(reference.log)
    for crash in (n_effects // 4, n_effects // 2, 3 * n_effects // 4):
        sim = federation(6, "dev002", fault, rounds=1, crash_before={crash})
        sim.run()
        assert sim.restarts == 1
        last = sim.journal[-1]
        assert (last.record.status, last.record.devices) == \
            (ref.record.status, ref.record.devices)
        # Which accuser is heard first may change with the redeliveries; the verdict not.
        assert {d: why.split(":")[0] for d, why in last.record.excluded.items()} == \
            {"dev002": KINDS[fault]}
        assert last.model is not None
        np.testing.assert_array_equal(last.model[1], ref.model[1])


def test_a_disrupting_device_stays_rested_when_it_answers_or_reconnects() -> None:
    policy = CohortPolicy(sideline_after=2, sideline_s=60.0)
    s = Sidelined(policy)
    assert s.blamed(["dev1"], now=0.0) == {"dev1": 120.0}
    s.forget("dev1")  # its status turned online again
    assert s.round_closed(["dev1", "dev2"], ["dev1", "dev2"], now=1.0) == {}  # it answered
    assert s.resting(100.0) == {"dev1"} and s.resting(121.0) == set()
    assert s.blamed(["dev1"], now=200.0) == {"dev1": 240.0}  # a second offence: longer
    for _ in range(10):
        rest = s.blamed(["dev1"], now=300.0)["dev1"]
    assert rest == MAX_REST_S
    silent = Sidelined(policy)  # a silent device rests only after two rounds, and 60 s
    silent.round_closed(["dev2"], [], now=0.0)
    assert silent.round_closed(["dev2"], [], now=1.0) == {"dev2": 60.0}


def test_the_journal_keeps_who_was_excluded_and_why(tmp_path: object) -> None:
    sim = federation(6, "dev004", "zero key", rounds=1)
    sim.run()
    (j,) = [e for e in sim.log if isinstance(e, Journal)]
    assert list(j.record.excluded) == ["dev004"]
    assert "advertised a mask key of small order" in j.record.excluded["dev004"]
