"""Poisoning devices on the aggregator's core, in memory (`aggregator/simulate.py`): a device
that sends another ring vector than its honest encoding (`support/poison.py`). A round whose
sum fails the aggregate check is journaled aborted with its reason, counted, and publishes no
model; the next honest round completes. A device that stays inside the bound completes its
round and moves the model by at most C (plus rounding): more than one honest device can, which
the check does not prevent (`protocol/codec_mean.py`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.effect_order import check_effect_order
from support.poison import KINDS, poisoned, unclipped
from support.simfed import CLIP, KEEP, LAYOUT, MODEL
from support.simfed import config as simfed_config

from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.effects import Count, Publish
from genofed.aggregator.simulate import Simulation, Tamper, clipped_mean, devices, seeded
from genofed.protocol.schema import SecureTask
from genofed.protocol.topics import Topics

SCALE, N = 1e6, 4
ATTACKER = "dev000"


def config(rounds: int) -> AggregatorConfig:
    """Rounds of all N devices (the simulated federation's configuration)."""
    return simfed_config(rounds, min_participants=N)


def honest(device: str, round_: int, weights: np.ndarray) -> np.ndarray:
    """Small updates (norm ~0.1) around one shared direction, as training on one task gives."""
    rng = np.random.default_rng([round_, int(device[3:])])
    return 0.02 * (np.linspace(-1, 1, weights.size) + 0.3 * rng.normal(size=weights.size))


def schedule(*kinds: str) -> dict[str, Tamper]:
    """The attacker's ring vector in its k-th round: kinds[k], then honest."""
    def tamper(device: str, task: SecureTask, model: np.ndarray, trained: np.ndarray,
               rng: np.random.Generator) -> np.ndarray | None:
        if task.round >= len(kinds):
            return None
        return poisoned(kinds[task.round], task, model, trained)
    return {ATTACKER: tamper}


def run(kinds: tuple[str, ...], completed: int) -> Simulation:
    sim = Simulation(config(completed), MODEL,
                     devices(N, honest, seed=11, tamper=schedule(*kinds)),
                     seeded(11))
    sim.run()
    return sim


@pytest.fixture(scope="module")
def every_poisoning() -> Simulation:
    # Rounds 0-3: each poisoning of the issue, aborted; rounds 4 and 5 inside the bound
    # (against the attacker's own update, then against the model), completed; round 6
    # honest, completed.
    return run(KINDS, completed=3)


def test_each_poisoning_aborts_its_round_with_the_reason(every_poisoning: Simulation) -> None:
    sim = every_poisoning
    recs = [j.record for j in sim.journal]
    assert [(r.round, r.status) for r in recs] == [
        (0, "aborted"), (1, "aborted"), (2, "aborted"), (3, "aborted"), (4, "completed"),
        (5, "completed"), (6, "completed")]
    assert sim.tampered == {r: {ATTACKER} for r in range(6)}
    for r in recs[:4]:
        assert r.reason.startswith(f"round {r.round} aborted: the survivors' sum fails the "
                                   "aggregate check: the mean of the 4 survivors' updates has "
                                   "L2 norm ")
        assert r.reason.endswith("that updates clipped to 1 can make: a survivor's input was "
                                 "not a clipped update")
        assert r.participants == 0 and r.devices == ()
    assert [j.model for j in sim.journal[:4]] == [None] * 4
    counted = [c for c in sim.log if isinstance(c, Count) and c.metric == "aggregates_rejected"]
    assert [(c.label, c.value) for c in counted] == [("aggregate_norm", 1.0)] * 4
    assert sum(c.value for c in sim.log if isinstance(c, Count) and
               (c.metric, c.label) == ("rounds", "aborted")) == 4


def test_an_aborted_round_publishes_no_model(every_poisoning: Simulation) -> None:
    sim = every_poisoning
    model_topic = Topics("sim").model
    published = [k for k, e in enumerate(sim.log)
                 if isinstance(e, Publish) and e.topic == model_topic]
    journaled = [k for k, e in enumerate(sim.log) if e in sim.journal]
    # Version 0 at start, then one release after each completed round's journal, none after
    # the four aborted ones.
    assert len(published) == 4
    assert all(published[0] < k < published[1] for k in journaled[:4])
    assert all(published[i - 3] > journaled[i] for i in (4, 5, 6))
    assert check_effect_order(sim.log, sim.identity.public, "sim", LAYOUT) > 0


@pytest.mark.parametrize("round_", [4, 5])
def test_inside_the_bound_the_model_moves_by_at_most_c(every_poisoning: Simulation,
                                                       round_: int) -> None:
    # The check's limit, stated: the within-bound rounds complete, their mean stays inside the
    # ball of radius C (+ rounding), and it lies far from the honest mean: more than any
    # honest device can move it (C / n even at the clip). Not the bar.
    sim = every_poisoning
    inside = sim.journal[round_]
    assert inside.update is not None
    rounding = math.sqrt(KEEP.sum()) / SCALE
    assert np.linalg.norm(inside.update) <= CLIP + rounding
    ups = sim.updates[round_]
    clean = clipped_mean(ups, KEEP, CLIP)
    moved = float(np.linalg.norm(inside.update - clean))
    one = max(float(np.linalg.norm(u[KEEP])) for u in ups.values()) / N
    assert moved > 0.8 * CLIP > 3 * CLIP / N and moved / one > 10
    if round_ == 5:  # aimed against the model the devices were sent: it turns it around
        before, after = sim.journal[4].model, sim.journal[5].model
        assert before is not None and after is not None
        assert float(np.dot(before[1], after[1])) < 0


def test_the_next_honest_round_is_the_clipped_mean_again(every_poisoning: Simulation) -> None:
    after = every_poisoning.journal[6]
    assert after.update is not None
    np.testing.assert_allclose(after.update, clipped_mean(every_poisoning.updates[6], KEEP, CLIP),
                               atol=1e-5)


def test_a_sum_just_beyond_the_bound_is_caught() -> None:
    # An unclipped update of norm 1.5 n C along the honest direction: the sum lies about 1.5
    # times past the bound, not orders of magnitude, and is caught all the same.
    def tamper(device: str, task: SecureTask, model: np.ndarray, trained: np.ndarray,
               rng: np.random.Generator) -> np.ndarray | None:
        if task.round > 0:
            return None
        assert task.codec is not None
        pipe = task.codec.pipeline(trained.size)
        return unclipped(pipe, 1.5 * N * CLIP * trained / np.linalg.norm(trained))

    sim = Simulation(config(1), MODEL, devices(N, honest, seed=12, tamper={ATTACKER: tamper}),
                     seeded(12))
    sim.run()
    assert [j.record.status for j in sim.journal] == ["aborted", "completed"]
    assert "aggregate check" in sim.journal[0].record.reason
