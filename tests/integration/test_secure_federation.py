"""The issue's end-to-end checks on real parts: Mosquitto with TLS and its ACL, the aggregator
and ten agent processes, secure rounds only.

One run covers: a round of ten devices (plus `ghost`, an enrolled device that says it is
online and never answers) in which one device dies after ShareKeys and another after
MaskedInputCollection; its new global model equals the plain average of the
survivors' updates (every agent runs tests/faulty_agent.py, which writes its plain delta to
its own state folder and dies on cue); forged, replayed, oversized and garbage payloads
injected with `mosquitto_pub` while the next round waits for `ghost`; and a subscriber on `#`
with the admin identity that records every payload and finds no sample name and no genotype
vector of any device in them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.faulty_agent import spawn as spawn_agent
from support.fedtools import (
    Recorder,
    codec_atol,
    enroll_ghost,
    exit_status,
    ghost,
    logs,
    mosquitto_pub,
    stop_all,
    stored_messages,
    wait_until,
)

from genofed.agent.vcf import read_dosages
from genofed.aggregator.state import read_journal, read_model, state_path
from genofed.cli.demo import spawn, start_broker, write_configs
from genofed.models.manifest import load_bundle
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration
N = 10
DIES = {"dev03": "SHARE_KEYS", "dev07": "MASKED_INPUT"}


def test_ten_devices_two_killed_injections_and_nothing_private_on_the_wire(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(N)]
    data = [dirs[i % len(dirs)] for i in range(N)]  # ten devices on the cohort's three VCFs
    topics = Topics("demo")
    state = tmp_path / "state" / "aggregator"
    db = state_path(state)
    (tmp_path / "logs").mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    broker = start_broker(tmp_path, [*names, "ghost"])
    recorder = Recorder(tmp_path, broker.port)
    try:
        cfg = write_configs(tmp_path, logreg_bundle, data, broker.port, rounds=2,
                            min_participants=N - len(DIES), names=names, stage_timeout_s=4.0)
        enroll_ghost(tmp_path)
        ghost(tmp_path, broker.port, "online")
        for name in names:
            procs.append(spawn_agent(tmp_path / "config" / f"{name}.toml",
                                     tmp_path / "logs" / f"{name}.log", dump_deltas=True,
                                     die_after=DIES.get(name)))
        wait_until("every agent online", lambda: len(_online(recorder)) == N + 1)
        agg = spawn(["aggregator", "run", "--config", str(cfg)],
                    tmp_path / "logs" / "aggregator.log")
        procs.append(agg)

        # Round 1 waits for `ghost` until its first deadline: inject while it does.
        wait_until("round 1's advertisements",
                   lambda: stored_messages(db, 1, "ADVERTISE_KEYS") == N - len(DIES))
        outbox = topics.outbox("dev00")
        wait_until("dev00's round 1 advertisement on the wire",  # 5 messages in round 0
                   lambda: sum(t == outbox for t, _ in list(recorder.payloads)) == 6)
        sent = [p for t, p in recorder.payloads if t == outbox]
        old, advert = sent[0], sent[-1]  # its advertisements of rounds 0 and 1
        forged = advert[:-1] + bytes([advert[-1] ^ 1])  # one bit of the signature flipped
        # GSA1 + 256 KiB: over the round's size limit, under the broker's packet bound (the
        # broker disconnects a sender of anything larger: test_broker_abuse.py).
        for junk in (b"garbage", b"GSA1" + bytes(256 << 10), advert, old, forged, b""):
            mosquitto_pub(tmp_path, broker.port, "dev00", outbox, junk)
        ghost(tmp_path, broker.port, "offline")
        assert exit_status(agg, tmp_path, 300) == 0, logs(tmp_path)
    finally:
        recorder.stop()
        stop_all(procs, broker)

    journal = read_journal(state)
    assert [(r["status"], r["participants"], r["cohort"]) for r in journal] == \
        [("completed", N - 1, N + 1), ("completed", N - 2, N - 1)], logs(tmp_path)
    # dev07 died after sending its masked input: it is in the sum; dev03 is not.
    assert set(journal[0]["devices"]) == set(names) - {"dev03"}  # type: ignore[arg-type]

    # The new model is the plain average of the survivors' updates, each counting once.
    updates = {n: np.load(tmp_path / "state" / n / "delta-0.npz") for n in journal[0]["devices"]}  # type: ignore[attr-defined]
    expect = np.mean([u["delta"] for u in updates.values()], axis=0)
    got = read_model(state, 1).astype(np.float64) - read_model(state, 0)  # FedAvg, lr 1
    assert journal[0]["examples"] == len(updates)
    np.testing.assert_allclose(got, expect, atol=codec_atol(len(updates)))
    assert np.abs(expect).max() > 1e-3  # and it is not trivially small

    agg_log = (tmp_path / "logs" / "aggregator.log").read_text()
    for why in ("Malformed", "a copy of its ADVERTISE_KEYS", "WrongRound", "ForgedMessage",
                "more than"):
        assert why in agg_log, why
    assert agg_log.count("dropped a message") >= 6
    # `ghost` never advertised in either round: it rests. The devices that died mid-round had
    # advertised, so they do not.
    assert "ghost was picked and sent nothing in 2 rounds in a row: left out of rounds for " \
        "60 s" in agg_log
    assert agg_log.count("was picked and sent nothing") == 1

    # Nothing private on the wire: no sample name, no dosage row of any device.
    panel = load_bundle(logreg_bundle).panel()
    wire = [p for _, p in recorder.payloads]
    assert len(wire) > 100
    for d in dirs:
        dos = read_dosages(d / "calls.vcf.gz", panel)
        needles = [s.encode() for s in dos.samples]
        needles += [row.astype(dt).tobytes() for row in dos.dosage for dt in ("<f4", "<f8")]
        for p in wire:
            assert not any(x in p for x in needles), "a sample name or genotype row was sent"


def _online(recorder: Recorder) -> set[str]:
    state: dict[str, str] = {}
    for topic, payload in list(recorder.payloads):
        if topic.endswith("/status") and payload:
            msg = json.loads(payload)
            state[msg["device"]] = msg["state"]
    return {d for d, s in state.items() if s == "online"}
