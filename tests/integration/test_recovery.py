"""Faults mid-round on real processes: the aggregator killed, the broker restarted.

A fourth enrolled device, `ghost`, says it is online and never answers: every round waits for
it until the stage deadline, which gives the test a window in which a round is surely in
flight (its three advertisements stored) to break something in. The agents advertise once per
round, so a round that completes after the aggregator was killed used the advertisements it
had stored and acknowledged before.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import faulty_agent
from support.fedtools import (
    codec_atol,
    enroll_ghost,
    exit_status,
    ghost,
    logs,
    stop_all,
    stored_messages,
    wait_connected,
    wait_until,
)
from support.mosquitto import restart

from genofed.aggregator.optimizers import ServerOptimizer
from genofed.aggregator.state import read_journal, read_model, state_path
from genofed.aggregator.store import Store
from genofed.broker.mosquitto import LocalMosquitto
from genofed.cli.demo import spawn, start_broker, write_configs
from genofed.models.manifest import load_bundle

pytestmark = pytest.mark.integration
STAGE_TIMEOUT_S = 4.0


def _aggregator(root: Path, cfg: Path, n: int) -> subprocess.Popen[bytes]:
    return spawn(["aggregator", "run", "--config", str(cfg)], root / "logs" / f"aggregator{n}.log")


@dataclass
class Fleet:
    """Broker, configs and the three agents, with a round in flight."""

    broker: LocalMosquitto
    config: Path
    db: Path
    procs: list[subprocess.Popen[bytes]]


@contextmanager
def fleet_mid_round(root: Path, cohort: Path, bundle: Path, *, round_: int = 0,
                    stage: str = "ADVERTISE_KEYS", stored: int = 3, server: str = "",
                    with_ghost: bool = True, hang: dict[str, str] | None = None,
                    die: dict[str, str] | None = None,
                    rounds: int = 2, stage_timeout_s: float = STAGE_TIMEOUT_S,
                    devices: int = 3) -> Iterator[Fleet]:
    """Start everything and wait until `stored` messages of `stage` of round `round_` are
    stored; kill it all at the end. `devices` agents dev00, dev01, ... take the cohort's VCFs
    in turn. `server` replaces the aggregator config's [server] lines; `hang` names devices
    that answer the given stage and then nothing more, `die` devices that exit abruptly after
    it. Every agent writes its plain deltas into its state folder."""
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(devices)]
    (root / "logs").mkdir()
    db = state_path(root / "state" / "aggregator")
    broker = start_broker(root, [*names, "ghost"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(root, bundle, [dirs[i % len(dirs)] for i in range(devices)],
                            broker.port, rounds=rounds, min_participants=3, names=names,
                            stage_timeout_s=stage_timeout_s)
        if server:
            text = cfg.read_text()
            cfg.write_text(text[:text.index("[server]")] + server)
        if with_ghost:
            enroll_ghost(root)
            ghost(root, broker.port, "online")
        procs += [faulty_agent.spawn(root / "config" / f"{n}.toml", root / "logs" / f"{n}.log",
                                     dump_deltas=True, hang_after=(hang or {}).get(n),
                                     die_after=(die or {}).get(n))
                  for n in names]
        wait_connected(root, names)  # on a loaded machine a round could start without some
        procs.append(_aggregator(root, cfg, 1))
        wait_until(f"{stored} stored {stage} messages of round {round_}",
                   lambda: stored_messages(db, round_, stage) == stored)
        yield Fleet(broker, cfg, db, procs)
    finally:
        stop_all(procs, broker)


def test_aggregator_killed_mid_round_resumes_it(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    adam = ServerOptimizer("fedadam", lr=0.01)
    server = f'[server]\noptimizer = "fedadam"\nlr = {adam.lr}\n'
    with fleet_mid_round(tmp_path, cohort, logreg_bundle, round_=1, server=server) as f:
        agg = f.procs[-1]
        agg.send_signal(signal.SIGKILL)  # no chance to clean up
        agg.wait()
        ghost(tmp_path, f.broker.port, "offline")
        f.procs.append(_aggregator(tmp_path, f.config, 2))
        assert exit_status(f.procs[-1], tmp_path, 300) == 0, logs(tmp_path)
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["round"], r["status"], r["participants"]) for r in journal] == \
        [(0, "completed", 3), (1, "completed", 3)], logs(tmp_path)
    assert "round 1 resumed at ADVERTISE_KEYS" in \
        (tmp_path / "logs" / "aggregator2.log").read_text()
    # FedAdam went on from the moments stored with model 1, not from zero: the moments of
    # model 2 are one Adam step from them, and model 2 is model 1 moved by them.
    store = Store(f.db)
    (m1, v1), (m2, v2) = store.moments(1), store.moments(2)  # type: ignore[misc]
    store.close()
    d = (m2 - adam.beta1 * m1) / (1 - adam.beta1)  # the round's mean update
    np.testing.assert_allclose(v2, adam.beta2 * v1 + (1 - adam.beta2) * d * d, rtol=1e-6)
    assert not np.allclose(v2, (1 - adam.beta2) * (m2 / (1 - adam.beta1)) ** 2, rtol=1e-3)
    w1, w2 = (read_model(tmp_path / "state" / "aggregator", v) for v in (1, 2))
    np.testing.assert_allclose(w2, w1 + adam.lr * m2 / (np.sqrt(v2) + adam.tau), atol=1e-6)


def test_aggregator_killed_with_masked_inputs_stored_resumes_the_round(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    # Four devices; dev03 answers ShareKeys and then freezes, so MaskedInputCollection waits
    # for it until its deadline with the other three inputs stored: the aggregator dies then
    # (the deadline leaves a loaded machine time to store the three before it passes).
    alive = ["dev00", "dev01", "dev02"]
    with fleet_mid_round(tmp_path, cohort, logreg_bundle, stage="MASKED_INPUT", stored=3,
                         with_ghost=False, hang={"dev03": "SHARE_KEYS"}, rounds=1,
                         stage_timeout_s=15.0, devices=4) as f:
        f.procs[-1].send_signal(signal.SIGKILL)
        f.procs[-1].wait()
        f.procs.append(_aggregator(tmp_path, f.config, 2))
        assert exit_status(f.procs[-1], tmp_path, 300) == 0, logs(tmp_path)
    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state)
    assert [(r["round"], r["status"], r["devices"]) for r in journal] == \
        [(0, "completed", alive)], logs(tmp_path)
    assert "round 0 resumed at MASKED_INPUT from the stored messages: 3 of 4 answers in, " \
        "1 devices asked again" in (tmp_path / "logs" / "aggregator2.log").read_text()
    # The three inputs stored before the kill are the round's sum: the new model is their
    # plain average (FedAvg, lr 1), to codec precision.
    updates = {n: np.load(tmp_path / "state" / n / "delta-0.npz") for n in alive}
    expect = np.mean([u["delta"] for u in updates.values()], axis=0)
    got = read_model(state, 1).astype(np.float64) - read_model(state, 0)
    np.testing.assert_allclose(got, expect, atol=codec_atol(len(updates)))
    assert np.abs(expect).max() > 1e-3


def test_agent_restarted_mid_round_sits_it_out_and_joins_the_next(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    # dev06 advertises in round 0 and dies, and is restarted at once while the round waits
    # for `ghost`, without the round keys it advertised. Joining again with new ones would
    # make its shares fail to authenticate at every peer and abort the round for all; it must
    # sit the round out (seven devices and ghost: k=6, t=4 tolerate the two dropouts).
    with fleet_mid_round(tmp_path, cohort, logreg_bundle, stored=7, devices=7,
                         die={"dev06": "ADVERTISE_KEYS"}, stage_timeout_s=10.0) as f:
        assert f.procs[6].wait(timeout=60) == 137
        f.procs.append(faulty_agent.spawn(tmp_path / "config" / "dev06.toml",
                                          tmp_path / "logs" / "dev06-again.log"))
        ghost(tmp_path, f.broker.port, "offline")
        assert exit_status(f.procs[7], tmp_path, 300) == 0, logs(tmp_path)
    journal = read_journal(tmp_path / "state" / "aggregator")
    names = [f"dev{i:02d}" for i in range(7)]
    assert [(r["status"], r["devices"]) for r in journal] == [
        ("completed", names[:6]), ("completed", names)], logs(tmp_path)
    again = (tmp_path / "logs" / "dev06-again.log").read_text()
    assert "round 0: joined before (before this agent restarted, or the aggregator went " \
        "back), and its round keys are gone: sitting it out" in again


@pytest.mark.parametrize("crash", [False, True], ids=["graceful", "killed"])
def test_broker_restarted_mid_round(tmp_path: Path, cohort: Path, pruned_bundle: Path,
                                    crash: bool) -> None:
    # On a pruned model: only the unpruned coordinates travel, and pruned ones stay 0.
    with fleet_mid_round(tmp_path, cohort, pruned_bundle) as f:
        restart(f.broker, crash=crash)  # same port; retained messages and sessions persist
        ghost(tmp_path, f.broker.port, "offline")
        assert exit_status(f.procs[-1], tmp_path, 300) == 0, logs(tmp_path)
    journal = read_journal(tmp_path / "state" / "aggregator")
    statuses = [r["status"] for r in journal]
    # A completed round, or a clean abort followed by a completed one; never a lost model.
    assert statuses.count("completed") == 2 and statuses[-1] == "completed", logs(tmp_path)
    assert all(r["participants"] == 3 for r in journal if r["status"] == "completed")
    agg_log = (tmp_path / "logs" / "aggregator1.log").read_text()
    assert "lost the broker" in agg_log
    bundle = load_bundle(pruned_bundle)
    keep = bundle.layout.keep
    assert f"{keep.sum()} of {keep.size} coordinates trained" in agg_log and keep.mean() < 0.6
    models = [read_model(tmp_path / "state" / "aggregator", v) for v in (0, 1, 2)]
    assert all(np.all(w[~keep] == 0) for w in models)
    assert not np.array_equal(models[2][keep], models[0][keep])


def test_device_silent_two_rounds_rests_instead_of_aborting_every_round(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    # Two agents and `ghost`, online and silent: a round of three needs all three (k=2, t=2),
    # so each round with ghost aborts at its first deadline. After two, ghost rests and the
    # aggregator waits for a third device instead of opening round after round.
    with fleet_mid_round(tmp_path, cohort, logreg_bundle, stored=2, devices=2) as f:
        agg_log = tmp_path / "logs" / "aggregator1.log"
        wait_until("the aggregator to wait", lambda: "round 2 waits" in agg_log.read_text())
        journal = read_journal(tmp_path / "state" / "aggregator")
        assert f.procs[-1].poll() is None, logs(tmp_path)
    assert [(r["round"], r["status"]) for r in journal] == [(0, "aborted"), (1, "aborted")]
    text = agg_log.read_text()
    assert "ghost was picked and sent nothing in 2 rounds in a row: left out of rounds for " \
        "60 s" in text
    assert "round 2 waits: 3 enrolled devices online (1 resting after silent rounds), " \
        "3 needed" in text
