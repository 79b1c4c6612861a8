"""An active and a standby aggregator on one PostgreSQL, on real processes and a real broker:
the active one is killed (SIGKILL: its machine gone) mid-round, and the standby takes the
lease, resumes the round from the stored messages and completes it.

Both run the same config (one aggregator identity, one certificate, so one MQTT session: the
standby, once active, gets what the broker queued for the aggregator while none was active).
`ghost` (see test_recovery.py) or a device that freezes holds the round open at the stage
under test while the active one is killed.
"""

from __future__ import annotations

import signal
import subprocess
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
    wait_until,
)

from genofed.aggregator.state import read_journal, read_model, state_path
from genofed.aggregator.store import Store
from genofed.cli.demo import spawn, start_broker, write_configs

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg")
LEASE_S = 3.0


def _count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url, autocommit=True) as db:
        try:
            return int(db.execute(sql, args).fetchone()[0])
        except psycopg.errors.UndefinedTable:
            return 0


def _failover(root: Path, cohort: Path, bundle: Path, url: str, *, round_: int, stage: str,
              stored: int, rounds: int, devices: int, hang: dict[str, str],
              with_ghost: bool, stage_timeout_s: float) -> None:
    """Run the federation with aggregators A (active) and B (standby); kill A once `stored`
    messages of `stage` of `round_` are stored; B must finish the rounds."""
    from genofed.aggregator.store_pg import PgStore

    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(devices)]
    (root / "logs").mkdir()
    broker = start_broker(root, [*names, "ghost"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfg = write_configs(root, bundle, [dirs[i % len(dirs)] for i in range(devices)],
                            broker.port, rounds=rounds, min_participants=3, names=names,
                            stage_timeout_s=stage_timeout_s)
        cfg.write_text(cfg.read_text() + f'\n[store]\nurl = "{url}"\nlease_s = {LEASE_S}\n')
        if with_ghost:
            enroll_ghost(root)
            ghost(root, broker.port, "online")
        pg = PgStore(url)  # the devices write_configs enrolled, into PostgreSQL
        for device, key in Store(state_path(root / "state" / "aggregator")).devices().items():
            pg.enroll(device, key)
        pg.close()
        procs += [faulty_agent.spawn(root / "config" / f"{n}.toml", root / "logs" / f"{n}.log",
                                     dump_deltas=True, hang_after=hang.get(n)) for n in names]
        run = ["aggregator", "run", "--config", str(cfg)]
        a_log, b_log = root / "logs" / "aggregator-a.log", root / "logs" / "aggregator-b.log"
        procs.append(spawn(run, a_log))
        wait_until("A to take the lease", lambda: "active: took the lease" in a_log.read_text())
        procs.append(spawn(run, b_log))
        wait_until("B to wait as the standby", lambda: "standby:" in b_log.read_text())
        a, b = procs[-2:]
        wait_until(f"{stored} stored {stage} messages of round {round_}", lambda: _count(
            url, "SELECT COUNT(*) FROM messages WHERE round=%s AND stage=%s", round_, stage)
            == stored)
        assert "active" not in b_log.read_text(), logs(root)  # never two actives
        a.send_signal(signal.SIGKILL)  # A's machine is gone
        a.wait()
        if with_ghost:
            ghost(root, broker.port, "offline")
        assert exit_status(b, root, 300) == 0, logs(root)
    finally:
        stop_all(procs, broker)
    text = b_log.read_text()
    assert f"active: took the lease 'demo' (token 2, {LEASE_S:.0f} s)" in text, logs(root)
    assert f"round {round_} resumed at {stage}" in text, logs(root)
    # The model history: every version once, none missing, each with its round's record.
    with psycopg.connect(url, autocommit=True) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM models ORDER BY version")]
    assert versions == list(range(rounds + 1))


def test_standby_completes_the_round_when_the_active_dies_at_advertise_keys(
        tmp_path: Path, cohort: Path, logreg_bundle: Path, pg_url: str) -> None:
    _failover(tmp_path, cohort, logreg_bundle, pg_url, round_=1, stage="ADVERTISE_KEYS",
              stored=3, rounds=2, devices=3, hang={}, with_ghost=True, stage_timeout_s=4.0)
    journal = read_journal(tmp_path / "state" / "aggregator", pg_url)
    # The agents advertise once per round: round 1 completed on the three advertisements
    # A had stored and acknowledged before it died.
    assert [(r["round"], r["status"], r["participants"]) for r in journal] == \
        [(0, "completed", 3), (1, "completed", 3)], logs(tmp_path)


def test_standby_completes_the_round_when_the_active_dies_at_masked_input(
        tmp_path: Path, cohort: Path, logreg_bundle: Path, pg_url: str) -> None:
    # dev03 answers ShareKeys and freezes: MaskedInputCollection waits for it with the other
    # three inputs stored, and A dies then.
    alive = ["dev00", "dev01", "dev02"]
    _failover(tmp_path, cohort, logreg_bundle, pg_url, round_=0, stage="MASKED_INPUT",
              stored=3, rounds=1, devices=4, hang={"dev03": "SHARE_KEYS"}, with_ghost=False,
              stage_timeout_s=8.0)
    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state, pg_url)
    assert [(r["round"], r["status"], r["devices"]) for r in journal] == \
        [(0, "completed", alive)], logs(tmp_path)
    # No acknowledged input lost: the new model is the plain average of the three inputs A
    # stored before it died (FedAvg, lr 1), to codec precision.
    expect = np.mean([np.load(tmp_path / "state" / n / "delta-0.npz")["delta"]
                      for n in alive], axis=0)
    got = read_model(state, 1, pg_url).astype(np.float64) - read_model(state, 0, pg_url)
    np.testing.assert_allclose(got, expect, atol=codec_atol(len(alive)))
    assert np.abs(expect).max() > 1e-3
