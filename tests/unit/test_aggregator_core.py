"""The aggregator's core in memory (`aggregator/simulate.py`): rounds of 10 to 50 devices
running the real codec and SecAgg+ client, dropping out at every stage; killed between any two
effects and restarted from what it stored; the order of its effects checked over every run.

The expected outcome of each round is worked out here independently of the server's code:
from the round's neighbour graph, its threshold t and the stage at which each device fell
silent, the survivors U1 >= U2 >= ... and the first check of Bonawitz et al. that fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.effect_order import OrderViolation, check_effect_order
from support.simfed import CLIP, KEEP, LAYOUT, MODEL, config, update

from genofed.aggregator.effects import Ack, Count, Journal, Publish, StoreMessage, StoreStage
from genofed.aggregator.simulate import Simulation, clipped_mean, devices, seeded
from genofed.aggregator.store import Store
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import Stage

STAGE_NAMES = {Stage.SHARE_KEYS: "ShareKeys", Stage.MASKED_INPUT: "MaskedInputCollection",
               Stage.CONSISTENCY_CHECK: "ConsistencyCheck", Stage.UNMASKING: "Unmasking"}


def dropouts(seed: int) -> object:
    """Each round a dropout rate of 2%, 10%, 25% or 50%; a device that drops falls silent at
    a stage drawn uniformly, from advertising keys to unmasking. Every ninth round, 55% never
    advertise (a round that cannot start)."""
    def silence(device: str, round_: int) -> Stage | None:
        rng = np.random.default_rng([seed, round_, int(device[3:])])
        if round_ % 9 == 8:
            return Stage.ADVERTISE_KEYS if rng.random() < 0.55 else None
        rate = (0.02, 0.1, 0.25, 0.5)[round_ % 4]
        return Stage(int(rng.integers(0, 5))) if rng.random() < rate else None
    return silence


def expected(task: SecureTask, silent: dict[str, Stage]) -> tuple[str, str | tuple[str, ...]]:
    """("completed", survivors) or ("aborted", the server's reason), from the graph alone."""
    assert task.secagg is not None
    names, graph, t = task.members(), task.secagg.graph, task.secagg.params.t

    def alive_at(stage: Stage) -> set[int]:
        return {i for i, d in enumerate(names) if silent.get(d, Stage.DONE) > stage}

    def why(text: str) -> tuple[str, str]:
        return "aborted", f"round {task.round} aborted: {text}"

    u1 = alive_at(Stage.ADVERTISE_KEYS)
    if not u1:
        return why("no client advertised keys")
    for u in sorted(u1):
        if len(graph.neighbours(u) & u1) < t:
            return why(f"client {u} has {len(graph.neighbours(u) & u1)} neighbours with keys, "
                       f"threshold {t}")
    u2 = alive_at(Stage.SHARE_KEYS)
    if not u2:
        return why("no client shared its keys")
    for stage, name in STAGE_NAMES.items():
        alive = alive_at(stage)
        for v in sorted(u2):
            if len(graph.neighbours(v) & alive) < t:
                return why(f"after {name}, client {v} has {len(graph.neighbours(v) & alive)} "
                           f"live neighbours holding its shares, threshold {t}")
    return "completed", tuple(sorted(names[i] for i in alive_at(Stage.MASKED_INPUT)))


def check_run(sim: Simulation) -> list[str]:
    """Every round of a finished simulation as expected; returns the outcomes."""
    outcomes = []
    weights = {0: MODEL.initial}
    for j in sim.journal:
        rec = j.record
        status, detail = expected(sim.tasks[rec.round], sim.silent.get(rec.round, {}))
        assert rec.status == status, (rec, detail)
        outcomes.append(status)
        if status == "aborted":
            assert rec.reason == detail
            continue
        assert rec.devices == detail and j.update is not None and j.model is not None
        ups = {d: sim.updates[rec.round][d] for d in rec.devices}
        np.testing.assert_allclose(j.update, clipped_mean(ups, KEEP, CLIP), atol=1e-5)
        assert rec.examples == len(ups)
        assert np.all(j.update[~KEEP] == 0) and np.all(j.model[1][~KEEP] == 0)
        v = j.model[0]
        np.testing.assert_array_equal(  # FedAvg, server lr 1, in float32
            j.model[1], (weights[v - 1].astype(np.float64) + j.update).astype(np.float32))
        weights[v] = j.model[1]
    assert check_effect_order(sim.log, sim.identity.public, "sim", LAYOUT) > 0
    counted = {name: sum(c.value for c in sim.log if isinstance(c, Count) and
                         (c.metric, c.label) == name) for name in (("bytes", "up"),)}
    assert counted[("bytes", "up")] == sum(j.record.bytes_up for j in sim.journal)
    return outcomes


@pytest.mark.parametrize(("n", "completed"), [(10, 70), (20, 50), (35, 30), (50, 15)])
def test_rounds_with_dropouts_at_every_stage(n: int, completed: int) -> None:
    # 165 completed rounds and, at these dropout rates, about 60 aborted: over 200 in all,
    # aborted at every check of the protocol.
    sim = Simulation(config(completed), MODEL, devices(n, update, dropouts(n), seed=n),  # type: ignore[arg-type]
                     seeded(n))
    sim.run()
    outcomes = check_run(sim)
    assert outcomes.count("completed") == completed
    assert len(sim.journal) >= completed + (2 if n >= 20 else 0), "no round aborted"


DROP = {("dev003", 0): Stage.SHARE_KEYS, ("dev005", 0): Stage.CONSISTENCY_CHECK,
        ("dev001", 1): Stage.MASKED_INPUT}


def crash_run(crash_before: set[int], rounds: int = 2) -> Simulation:
    """Rounds of eight devices, three of which fall silent mid-round once."""
    sim = Simulation(config(rounds), MODEL,
                     devices(8, update, lambda d, r: DROP.get((d, r)), seed=8), seeded(8),
                     crash_before=set(crash_before))
    sim.run()
    return sim


@pytest.fixture(scope="module")
def uninterrupted() -> Simulation:
    sim = crash_run(set())
    assert [j.record.status for j in sim.journal] == ["completed", "completed"]
    assert sim.restarts == 0
    return sim


@pytest.fixture(scope="module")
def one_round() -> Simulation:
    sim = crash_run(set(), rounds=1)
    assert [j.record.devices for j in sim.journal] == [  # dev005 dropped after its input
        ("dev000", "dev001", "dev002", "dev004", "dev005", "dev006", "dev007")]
    return sim


def boundaries(sim: Simulation) -> list[int]:
    """Every place a crash can fall between two effects that do something outside the
    process (a count is memory only: a crash just before it is a crash before the next)."""
    return [k + 1 for k, e in enumerate(sim.log) if not isinstance(e, Count)]


def test_killed_before_any_effect_resumes_to_the_same_model(one_round: Simulation) -> None:
    # Every boundary of a round in which one device drops after advertising and another
    # after sending its input: the restarted aggregator ends it with the same model, bit for
    # bit, and the same survivors, whatever it had stored, acknowledged and published.
    [ref] = one_round.journal
    assert ref.model is not None
    points = boundaries(one_round)
    assert len(points) > 100
    for k in points:
        sim = crash_run({k}, rounds=1)
        assert sim.restarts == 1, k
        [done] = [j for j in sim.journal if j.model is not None]
        assert done.model is not None and done.model[1].tobytes() == ref.model[1].tobytes(), k
        assert done.record.devices == ref.record.devices, k
        check_effect_order(sim.log, sim.identity.public, "sim", LAYOUT)


def test_killed_twice_over_two_rounds_even_while_recovering(uninterrupted: Simulation
                                                            ) -> None:
    ref = uninterrupted.store.models[2][0]
    points = boundaries(uninterrupted)
    rng = np.random.default_rng(0)
    for _ in range(16):
        first = int(rng.choice(points[:-1]))
        second = first + int(rng.integers(1, 8))  # often among the recovery's own effects
        sim = crash_run({first, second})
        assert sim.restarts == 2
        assert sim.store.models[2][0].tobytes() == ref.tobytes(), (first, second)
        check_effect_order(sim.log, sim.identity.public, "sim", LAYOUT)


def broker_run(losses: frozenset[int]) -> Simulation:
    """Two rounds of eight devices that never fall silent (a device that did could not send
    again what the broker lost), the broker killed before each delivery in `losses`."""
    sim = Simulation(config(2), MODEL, devices(8, update, seed=9), seeded(9),
                     broker_losses=set(losses))
    sim.run()
    return sim


def test_a_broker_that_loses_what_it_had_acknowledged_costs_no_answer() -> None:
    # A broker killed between persistence saves forgets the messages it had acknowledged and
    # not yet delivered: adverts, answers, requests, the task. When it is back, the aggregator
    # republishes the task and asks again every device that has not answered the current
    # stage, and a device whose key list never came sends its advertisement again; so the
    # rounds end with every device and the same model, bit for bit, wherever the loss falls
    # (and with losses at many places in one run).
    ref = broker_run(frozenset())
    assert [len(j.record.devices) for j in ref.journal] == [8, 8]
    total = ref.delivered
    runs = [frozenset({k}) for k in range(1, total, max(1, total // 60))]
    runs.append(frozenset(range(3, total, 11)))
    for losses in runs:
        sim = broker_run(losses)
        assert [j.record.devices for j in sim.journal] == \
            [j.record.devices for j in ref.journal], sorted(losses)
        assert sim.store.models[2][0].tobytes() == ref.store.models[2][0].tobytes(), \
            sorted(losses)
        check_effect_order(sim.log, sim.identity.public, "sim", LAYOUT)


def test_a_device_asked_again_after_a_restart_answers_again_and_the_copy_is_dropped(
        uninterrupted: Simulation) -> None:
    # Killed right after the first masked input was stored: the other devices of U2 had the
    # request and are asked again; each sends its answer again, byte for byte (the broker
    # might have lost it), the aggregator drops the copies, and the round ends as it would.
    log = uninterrupted.log
    first_masked = next(k for k, e in enumerate(log) if isinstance(e, StoreMessage)
                        and e.stage == "MASKED_INPUT")
    sim = crash_run({first_masked + 2})
    assert sim.store.models[1][0].tobytes() == uninterrupted.store.models[1][0].tobytes()
    after = sim.log[first_masked + 1:]
    # U2 has seven devices: dev000's stored input is redelivered (unacknowledged), dev005
    # falls silent after this stage, and the five others answer again.
    assert sum(isinstance(e, Count) and (e.metric, e.label) == ("rejected", "duplicate")
               for e in after) == 6
    assert sum(d.rejected for d in sim.devices) == 0


def test_the_store_keeps_what_the_memory_store_keeps(tmp_path: Path,
                                                     uninterrupted: Simulation) -> None:
    # The durable effects of a recorded run, applied to SQLite, read back as the simulator's
    # store reads back at every point a round is in flight or closed.
    from genofed.aggregator.memory import MemoryStore

    db, mem = Store(tmp_path / "a.db"), MemoryStore()
    compared = 0
    for e in uninterrupted.log:
        if isinstance(e, Count | Ack | Publish):
            continue
        db.apply(e)
        mem.apply(e, 0.0)
        if isinstance(e, StoreStage | Journal):
            a, b = db.snapshot(), mem.snapshot(0.0)
            assert a.next_round == b.next_round and a.model is not None and b.model is not None
            assert a.model[0] == b.model[0] and a.model[1].tobytes() == b.model[1].tobytes()
            assert (a.in_flight is None) == (b.in_flight is None)
            if a.in_flight is not None and b.in_flight is not None:
                assert (a.in_flight.round, a.in_flight.task, a.in_flight.stage) == \
                    (b.in_flight.round, b.in_flight.task, b.in_flight.stage)
                assert {s: sorted(m) for s, m in a.in_flight.messages.items()} == \
                    {s: sorted(m) for s, m in b.in_flight.messages.items()}
            compared += 1
    assert compared >= 10
    db.close()


def test_the_order_check_catches_each_kind_of_early_effect(uninterrupted: Simulation) -> None:
    log = list(uninterrupted.log)
    key = uninterrupted.identity.public

    def moved_before(pred_late: type, pred_early: type) -> list[object]:
        """The log with the first `pred_late` effect moved just before the `pred_early`
        effect it follows."""
        out = list(log)
        j = next(k for k, e in enumerate(out) if isinstance(e, pred_late))
        i = max(k for k in range(j) if isinstance(out[k], pred_early))
        out.insert(i, out.pop(j))
        return out

    def first_ack_after_store() -> list[object]:
        out = list(log)
        i = next(k for k, e in enumerate(out) if isinstance(e, StoreMessage))
        j = next(k for k in range(i, len(out)) if isinstance(out[k], Ack))
        out.insert(i, out.pop(j))
        return out

    for broken, why in ((first_ack_after_store(), "acknowledged before it was stored"),
                        (moved_before(Publish, type(log[0])), "published before")):
        with pytest.raises(OrderViolation, match=why):
            check_effect_order(broken, key, "sim", LAYOUT)  # type: ignore[arg-type]
    routes = [k for k, e in enumerate(log) if isinstance(e, StoreStage)]
    no_stage = [e for k, e in enumerate(log) if k != routes[0]]
    with pytest.raises(OrderViolation, match="before the round reached that stage"):
        check_effect_order(no_stage, key, "sim", LAYOUT)


def test_a_tighter_mask_zeroes_the_stored_model_and_moments_at_start() -> None:
    # The coordinator re-exported the bundle with more weights pruned and restarted the
    # aggregator on it: its stored model and FedAdam moments still hold the newly pruned.
    from genofed.aggregator.config import ServerSection
    from genofed.aggregator.core import AggregatorCore
    from genofed.aggregator.effects import Restored, Snapshot
    from genofed.protocol.schema import ModelRelease
    from genofed.protocol.secagg import SigningIdentity

    cfg = config(5)
    cfg = type(cfg)(**{**cfg.__dict__, "server": ServerSection("fedadam", 0.1)})
    ident = SigningIdentity.generate()
    core = AggregatorCore(cfg, ident, MODEL)
    ones = np.ones(25)
    effects = core.handle(Restored(Snapshot((3, ones.astype(np.float32)), (ones, ones), 4,
                                            None, {}), now=0.0))
    [release] = [ModelRelease.open(e.payload, ident.public, "sim") for e in effects
                 if isinstance(e, Publish) and e.topic.endswith("/model")]
    w = LAYOUT.dequantize(release.values, release.scales)
    assert release.version == 3 and np.all(w[~KEEP] == 0) and np.all(w[KEEP] == 1)
    assert np.all(core.opt_state.m[~KEEP] == 0) and np.all(core.opt_state.v[KEEP] == 1)


def test_the_core_holds_only_what_the_next_round_needs() -> None:
    # 300 rounds in memory: what the core keeps from round to round stops growing once the
    # recent records are full (the journal, in the store, keeps every round).
    import tracemalloc

    from genofed.aggregator.core import RECORDS_KEPT

    sizes = []
    sim = Simulation(config(300), MODEL, devices(3, update, seed=3), seeded(3))
    tracemalloc.start()
    try:
        for upto in (150, 300):
            sim.core.cfg = config(upto)  # run on to `upto` completed rounds
            sim.run()
            sim.log.clear()  # the simulator's own record of effects is not the core's
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(True, "*/aggregator/*"),
                 tracemalloc.Filter(False, "*/aggregator/simulate.py"),
                 tracemalloc.Filter(False, "*/aggregator/memory.py")])
            sizes.append(sum(s.size for s in snap.statistics("filename")))
    finally:
        tracemalloc.stop()
    assert len(sim.core.records) == RECORDS_KEPT and sim.core.flight is None
    assert len(sim.core.sidelined.until) <= 3
    assert sizes[1] - sizes[0] < 200_000, sizes  # bytes, from round 150 to 300


def test_the_broker_coming_back_gets_the_retained_model_and_task_again(
        uninterrupted: Simulation) -> None:
    # A broker that crashed may have lost its retained messages (it saves every few seconds).
    from genofed.aggregator.effects import Reconnected
    from genofed.protocol.schema import ModelRelease
    from genofed.protocol.topics import Topics

    sim = uninterrupted
    effects = sim.core.handle(Reconnected(sim.now))
    topics = Topics("sim")
    published = {e.topic: e.payload for e in effects if isinstance(e, Publish)}
    release = ModelRelease.open(published[topics.model], sim.identity.public, "sim")
    assert release.version == sim.core.version == 2
    task = SecureTask.open(published[topics.task], sim.identity.public, "sim")
    assert task.state == "finished" and all(e.retain for e in effects if isinstance(e, Publish))
    assert check_effect_order([*sim.log, *effects], sim.identity.public, "sim", LAYOUT) > 0
