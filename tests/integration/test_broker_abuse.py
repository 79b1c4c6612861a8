"""A federation on the real broker against one bad certificate holder, and against a device
revoked in the middle of a round.

The flood runs at RATE payloads a second, the rate at which the configuration this replaced
(saved after every change, 64 MiB packets) grew a 180 MB persistence file and stopped rounds
(`genofed bench broker_flood`, part 2, at FLOOD_RATE=100; the issue saw 178 MB).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import faulty_agent
from support.fedtools import Recorder, exit_status, logs, stop_all, stored_messages, wait_until
from support.intruder import Flooder, Thief, tls_accepts

from genofed.aggregator.state import read_journal, state_path
from genofed.broker.deploy import MQTT_OVERHEAD, Sizing
from genofed.cli.demo import spawn, start_broker, write_configs
from genofed.models.manifest import load_bundle
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration
RATE = 100.0
MIB = 1 << 20
TOPICS = Topics("demo")


def test_rounds_complete_through_floods_and_takeover_attempts(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    # Three certificates the aggregator never enrolled: `big` floods 1 MiB payloads, which
    # the broker refuses (they exceed the deployment's packet bound); `under` floods payloads
    # just under the bound, which reach the aggregator and are dropped there; `thief` asks
    # for the aggregator's and dev00's client ids, over and over.
    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [d.name for d in devices]
    sizing = Sizing(load_bundle(logreg_bundle).layout.n_params, len(names))
    (tmp_path / "logs").mkdir()
    broker = start_broker(tmp_path, [*names, "big", "under", "thief"], sizing)
    root = tmp_path / "broker"
    procs: list[subprocess.Popen[bytes]] = []
    floods = [Flooder(root, broker.port, "big", TOPICS.outbox("big"), size=MIB, rate=RATE),
              Flooder(root, broker.port, "under", TOPICS.outbox("under"),
                      size=sizing.largest_message - MQTT_OVERHEAD, rate=RATE)]
    thief = Thief(root, broker.port, "thief", ["genofed-demo-aggregator",
                                               f"genofed-demo-{names[0]}"])
    try:
        cfg = write_configs(tmp_path, logreg_bundle, devices, broker.port, rounds=2,
                            min_participants=3)
        for f in floods:
            f.start()
        thief.start()
        agg = spawn(["aggregator", "run", "--config", str(cfg)],
                    tmp_path / "logs" / "aggregator.log")
        procs = [agg, *(spawn(["agent", "run", "--config", str(tmp_path / "config" /
                                                                f"{n}.toml")],
                              tmp_path / "logs" / f"{n}.log") for n in names)]
        assert exit_status(agg, tmp_path, 300) == 0, logs(tmp_path)
        for p in procs[1:]:
            assert exit_status(p, tmp_path, 60) == 0, logs(tmp_path)
    finally:
        big, under = (f.stop() for f in floods)
        thief.stop()
        stop_all(procs, broker)
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["status"], r["participants"]) for r in journal] == [("completed", 3)] * 2, \
        logs(tmp_path)
    agg_log = (tmp_path / "logs" / "aggregator.log").read_text()
    # The floods and the thief were at it while the rounds ran.
    assert big.acked == 0 and big.connects >= 3 and "big" not in agg_log
    assert "disconnected due to oversize packet" in (root / "mosquitto.log").read_text()
    assert under.acked >= 3 and agg_log.count("dropped a message from under") >= 3
    assert thief.accepted >= 2
    # Its connections were its own: the aggregator's session never changed hands.
    assert "lost the broker" not in agg_log


def test_device_revoked_mid_round_is_refused_and_its_queued_message_dropped(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    # dev03 is frozen (SIGSTOP) before round 0 opens, so the round waits for its
    # advertisement; the aggregator is killed meanwhile, dev03 thaws and advertises, and its
    # advertisement waits at the broker for the aggregator. Then dev03 is revoked (CRL, ACL,
    # un-enrolled) and the broker reloaded, and the aggregator restarts: the advertisement is
    # dropped, the round completes with the other three, and so does the next.
    # The broker's other clients are probed as "bystander", a certificate no agent runs: a
    # probe as a running device would take over its session (the broker binds the client id
    # to the certificate) and knock that device off mid-round.
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(4)]
    (tmp_path / "logs").mkdir()
    db = state_path(tmp_path / "state" / "aggregator")
    broker = start_broker(tmp_path, [*names, "bystander"])
    root = tmp_path / "broker"
    recorder = Recorder(tmp_path, broker.port)
    procs: list[subprocess.Popen[bytes]] = []

    def seen(device: str, suffix: str) -> list[bytes]:
        return [p for t, p in list(recorder.payloads) if t == f"{TOPICS.base}/device/"
                f"{device}/{suffix}"]

    try:
        cfg = write_configs(tmp_path, logreg_bundle, [dirs[i % 3] for i in range(4)],
                            broker.port, rounds=2, min_participants=3, names=names,
                            stage_timeout_s=4.0)
        procs = [faulty_agent.spawn(tmp_path / "config" / f"{n}.toml",
                                    tmp_path / "logs" / f"{n}.log") for n in names]
        wait_until("every agent online", lambda: all(seen(n, "status") for n in names))
        procs[3].send_signal(signal.SIGSTOP)
        procs.append(spawn(["aggregator", "run", "--config", str(cfg)],
                           tmp_path / "logs" / "aggregator1.log"))
        wait_until("three advertisements", lambda: stored_messages(db, 0, "ADVERTISE_KEYS") == 3)
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait()
        procs[3].send_signal(signal.SIGCONT)
        wait_until("dev03's advertisement at the broker", lambda: seen("dev03", "outbox"))
        assert stored_messages(db, 0, "ADVERTISE_KEYS") == 3  # it waits for the aggregator
        done = subprocess.run([sys.executable, "-m", "genofed", "broker", "revoke-device",
                               "--dir", str(root), "--device", "dev03",
                               "--aggregator-config", str(cfg)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "un-enrolled dev03" in done.stdout, done.stderr
        assert tls_accepts(root, broker.port, "bystander")
        broker.reload()
        wait_until("dev03 refused", lambda: not tls_accepts(root, broker.port, "dev03"))
        assert tls_accepts(root, broker.port, "bystander")
        procs.append(spawn(["aggregator", "run", "--config", str(cfg)],
                           tmp_path / "logs" / "aggregator2.log"))
        assert exit_status(procs[-1], tmp_path, 300) == 0, logs(tmp_path)
    finally:
        recorder.stop()
        stop_all(procs, broker)
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["round"], r["status"], r["devices"]) for r in journal] == [
        (0, "completed", names[:3]), (1, "completed", names[:3])], logs(tmp_path)
    agg_log = (tmp_path / "logs" / "aggregator2.log").read_text()
    assert "round 0 resumed at ADVERTISE_KEYS" in agg_log
    assert "dropped a message from dev03: not enrolled" in agg_log
