"""The agent as a service on real parts: Mosquitto (TLS, ACL), the aggregator and agent
processes, signals, sd_notify on a real socket, the owner's consent and view.

systemd itself cannot run here: the test plays the service manager (a NOTIFY_SOCKET it
listens on, WATCHDOG_USEC, SIGTERM and SIGHUP) and runs the agent with its default log level,
as the unit does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.fedtools import logs, stop_all, wait_until

from genofed.agent.consent import set_consent
from genofed.agent.status import read_status
from genofed.aggregator.state import read_journal
from genofed.cli.demo import spawn, start_broker, write_configs

pytestmark = pytest.mark.integration


def _federation(tmp_path: Path, cohort: Path, bundle: Path, *, rounds: int, epochs: int,
                stage_timeout_s: float) -> tuple[Path, list[str], object]:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    dirs.append(dirs[0])  # four devices, so that a round of three goes on without one
    names = [f"dev{i:02d}" for i in range(len(dirs))]
    (tmp_path / "logs").mkdir()
    broker = start_broker(tmp_path, names)
    agg = write_configs(tmp_path, bundle, dirs, broker.port, rounds=rounds,
                        min_participants=3, names=names, stage_timeout_s=stage_timeout_s)
    # Training long enough to act during it: one example a step, many epochs.
    agg.write_text(agg.read_text().replace("local_epochs = 2\nbatch_size = 32\nlr = 0.02",
                                           f"local_epochs = {epochs}\nbatch_size = 1\n"
                                           "lr = 0.001"))
    return agg, names, broker


def _agent(tmp_path: Path, name: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    """`genofed agent run` as the unit starts it: default log level."""
    with (tmp_path / "logs" / f"{name}.log").open("wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "genofed", "agent", "run", "--config",
                                 str(tmp_path / "config" / f"{name}.toml")],
                                stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})


def _until(what: str, pred: Callable[[], bool], procs: list[subprocess.Popen[bytes]],
           root: Path) -> None:
    """wait_until, failing at once if a process already exited with an error."""
    def check() -> bool:
        assert all(p.poll() in (None, 0) for p in procs), logs(root)
        return pred()
    wait_until(what, check)


def _genofed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genofed", *args], capture_output=True,
                          text=True, timeout=120)


def test_notify_and_sigterm_during_training(tmp_path: Path, cohort: Path,
                                            logreg_bundle: Path) -> None:
    agg, names, broker = _federation(tmp_path, cohort, logreg_bundle, rounds=1, epochs=300,
                                     stage_timeout_s=20.0)
    got: list[bytes] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0genofed-notify-%d" % os.getpid())
    sock.settimeout(0.2)
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                got.append(sock.recv(4096))
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen)
    listener.start()
    procs: list[subprocess.Popen[bytes]] = []
    victim = names[0]
    try:
        procs.append(_agent(tmp_path, victim, {
            "NOTIFY_SOCKET": f"@genofed-notify-{os.getpid()}", "WATCHDOG_USEC": "400000"}))
        procs += [_agent(tmp_path, n) for n in names[1:]]
        procs.append(spawn(["aggregator", "run", "--config", str(agg)],
                           tmp_path / "logs" / "aggregator.log"))
        log = tmp_path / "logs" / f"{victim}.log"
        # Round progress shows at the default log level.
        _until("the victim training", lambda: "round 0: training" in log.read_text(), procs,
               tmp_path)
        procs[0].send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert procs[0].wait(timeout=60) == 0, logs(tmp_path)
        print(f"SIGTERM during training: exited after {time.monotonic() - t0:.2f} s")
        text = log.read_text()
        m = re.search(r"training interrupted after (\d+) of (\d+) steps", text)
        assert m and int(m.group(1)) < int(m.group(2)), text
        assert "round 0: left: the agent was stopped" in text, text
        assert procs[-1].wait(timeout=180) == 0, logs(tmp_path)
        for p in procs[1:-1]:
            assert p.wait(timeout=60) == 0, logs(tmp_path)
    finally:
        done.set()
        listener.join()
        sock.close()
        stop_all(procs, broker)  # type: ignore[arg-type]
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["status"], r["participants"]) for r in journal] == [("completed", 3)]
    joined = b"\n".join(got).decode()
    assert b"READY=1\nSTATUS=waiting for the broker" in got, got
    assert "WATCHDOG=1" in joined and "STATUS=training for round 0" in joined, got
    assert got[-1] == b"STOPPING=1\nSTATUS=stopped", got
    status = json.loads(_genofed("agent", "status", "--json", "--config",
                                 str(tmp_path / "config" / f"{victim}.toml")).stdout)
    assert status["state"] == "offline" and not status["running"]


def test_reload_withdrawal_and_the_owners_view(tmp_path: Path, cohort: Path,
                                               logreg_bundle: Path) -> None:
    agg, names, broker = _federation(tmp_path, cohort, logreg_bundle, rounds=3, epochs=150,
                                     stage_timeout_s=12.0)
    owner = names[0]
    cfg = tmp_path / "config" / f"{owner}.toml"
    state = tmp_path / "state" / owner
    procs: list[subprocess.Popen[bytes]] = [_agent(tmp_path, n) for n in names]
    log = tmp_path / "logs" / f"{owner}.log"
    try:
        _until("the owner's agent connected",
               lambda: (read_status(state) or {}).get("connected") is True, procs, tmp_path)
        # SIGHUP: a phenotype file with half the samples; the same process goes on.
        pheno = Path(re.search(r'phenotypes = "(.*)"', cfg.read_text()).group(1))  # type: ignore[union-attr]
        lines = pheno.read_text().splitlines()
        half = tmp_path / "half.tsv"
        half.write_text("\n".join(lines[: 1 + (len(lines) - 1) // 2]) + "\n")
        cfg.write_text(cfg.read_text().replace(str(pheno), str(half)))
        procs[0].send_signal(signal.SIGHUP)
        _until("the reload", lambda: "reloaded" in log.read_text(), procs, tmp_path)
        assert procs[0].poll() is None
        assert "left out" in log.read_text()  # the samples without a phenotype now
        n_half = int(re.search(r"reloaded \S+: (\d+) samples", log.read_text()).group(1))  # type: ignore[union-attr]
        procs.append(spawn(["aggregator", "run", "--config", str(agg)],
                           tmp_path / "logs" / "aggregator.log"))
        _until("round 0 answered", lambda: "round 0: answered every stage" in log.read_text(),
               procs, tmp_path)
        assert f"round 0: training on {n_half} examples" in log.read_text()
        view = json.loads(_genofed("agent", "status", "--json", "--config", str(cfg)).stdout)
        assert view["running"] and view["last_round"]["round"] == 0
        assert view["privacy"].startswith("no round with differential privacy joined")
        # The owner withdraws while the device trains for round 1: it leaves that round.
        _until("round 1 training", lambda: "round 1: training" in log.read_text(), procs,
               tmp_path)
        set_consent(state, "withdrawn")  # as `genofed agent consent withdraw` does
        assert procs[-1].wait(timeout=180) == 0, logs(tmp_path)
        for p in procs[:-1]:
            assert p.wait(timeout=60) == 0, logs(tmp_path)
    finally:
        stop_all(procs, broker)  # type: ignore[arg-type]
    text = log.read_text()
    assert "round 1: consent withdrawn: leaving the round" in text, text
    assert "round 2: training" not in text, text
    journal = read_journal(tmp_path / "state" / "aggregator")
    assert [(r["status"], r["participants"]) for r in journal] == \
        [("completed", 4), ("completed", 3), ("completed", 3)], logs(tmp_path)
    # The audit log: what left the device, and the owner's decision, chain intact.
    audit = _genofed("agent", "audit", "--json", "--config", str(cfg))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    entries = json.loads(audit.stdout)["entries"]
    assert [(e["kind"], e.get("round"), e.get("outcome", e.get("state"))) for e in entries] == [
        ("contribution", 0, "answered every stage"), ("consent", None, "withdrawn"),
        ("contribution", 1, "left: consent withdrawn")]
    assert entries[0]["bytes_up"] > 0 and entries[0]["topic"].endswith(f"{owner}/outbox")
    # It left mid-round: before its advertisement (0 bytes) or after it, never all stages.
    assert entries[2]["bytes_up"] < entries[0]["bytes_up"]
    # Its costs, and its own score from the global model it holds.
    cost = json.loads(_genofed("agent", "cost", "--json", "--config", str(cfg)).stdout)
    assert [r["round"] for r in cost["rounds"]] == [0, 1]
    assert cost["rounds"][0]["bytes_up"] == entries[0]["bytes_up"]
    assert cost["rounds"][0]["cpu_s"] > 0 and cost["rounds"][0]["peak_rss_mb"] > 0
    # The bench's simulated round sends and receives what the real one did, byte for byte.
    bench = json.loads(_genofed("agent", "bench", "--config", str(cfg), "--devices", "4",
                                "--json").stdout)
    assert (bench["bytes_up"], bench["bytes_down"]) == \
        (cost["rounds"][0]["bytes_up"], cost["rounds"][0]["bytes_down"])
    pred = _genofed("agent", "predict", "--config", str(cfg))
    assert pred.returncode == 0 and "model version" in pred.stdout, pred.stderr
    assert (state / "model.npz").exists()
