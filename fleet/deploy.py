"""A whole deployment for the fleet: PKI, Mosquitto (TLS, client certificates, the ACL), the
aggregator's state with every device enrolled, the real aggregator process, and the fleet's
device processes; one call runs rounds and returns what they cost.

The aggregator is `genofed aggregator run` in its own process, as deployed; its CPU seconds
come from the kernel when it exits (`os.wait4`), its peak memory from `/proc/PID/status`
(VmHWM) read until then, the broker's CPU from `/proc/PID/stat` before and after.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed.aggregator.state import load_identity, open_store, read_journal
from genofed.broker.deploy import Sizing, init_broker
from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.pki import AGGREGATOR, PkiLayout
from genofed.errors import LocalInputError
from genofed.fleet.device import DROP_POINTS
from genofed.fleet.worker import WorkerSpec, serve
from genofed.models.manifest import load_bundle

FEDERATION = "fleet"


@dataclass(frozen=True)
class FleetPlan:
    """`x`, `y`: one genome per online device; `enrolled` >= their count (the rest enrolled
    with the aggregator and never online); `drop_rate` of the devices drop out, each at a
    drop point drawn uniformly (`device.DROP_POINTS`)."""

    x: np.ndarray
    y: np.ndarray
    enrolled: int
    rounds: int = 1
    processes: int = 2
    drop_rate: float = 0.05
    stage_timeout_s: float = 30.0
    seed: int = 0
    keep_deltas: bool = False  # tests: each process saves its devices' updates (npz)
    secagg_dropout: float | None = None  # `[secagg] dropout_fraction` (None: the default)

    def __post_init__(self) -> None:
        n = len(self.y)
        if not 3 <= n <= self.enrolled or not 0 <= self.drop_rate < 1 or self.processes < 1:
            raise LocalInputError(f"fleet: need 3 <= devices ({n}) <= enrolled "
                                  f"({self.enrolled}), 0 <= drop_rate < 1, processes >= 1")


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _watch_rss(pid: int, peak: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except OSError:
            return
        stop.wait(0.2)


def _aggregator_config(root: Path, bundle: Path, port: int, plan: FleetPlan) -> Path:
    pki, n = PkiLayout(root / "broker"), len(plan.y)
    ident = pki.client(AGGREGATOR)
    cfg = root / "aggregator.toml"
    cfg.write_text(
        f'federation = "{FEDERATION}"\nbundle = "{bundle.resolve()}"\n'
        f'state_dir = "{(root / "aggregator").resolve()}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\nca = "{pki.ca_cert.resolve()}"\n'
        f'cert = "{ident.cert.resolve()}"\nkey = "{ident.key.resolve()}"\n'
        f"[rounds]\nrounds = {plan.rounds}\nstage_timeout_s = {plan.stage_timeout_s}\n"
        "retry_s = 1.0\nclose_on_offline = true\n"
        "local_epochs = 2\nbatch_size = 32\nlr = 0.02\noptimizer = \"sgd\"\n"
        f"[cohort]\nmin_participants = {n}\nmax_participants = {n}\n"
        "[codec]\nclip = 10.0\nscale = 1e6\n[server]\noptimizer = \"fedavg\"\nlr = 1.0\n" +
        ("" if plan.secagg_dropout is None else
         f"[secagg]\ndropout_fraction = {plan.secagg_dropout}\n"))
    return cfg


def run_fleet(root: Path, bundle_dir: Path, plan: FleetPlan, *, timeout_s: float = 900.0,
              profile: Path | None = None) -> dict[str, Any]:
    """Deploy under `root` (empty), run `plan.rounds` rounds with every online device picked,
    and return the costs: the aggregator's journal records, its CPU and peak RSS, the
    broker's CPU, the fleet's per-device stats and per-stage latencies. `profile`: run the
    aggregator under cProfile, its stats written there."""
    n = len(plan.y)
    rng = np.random.default_rng(plan.seed)
    names = [f"d{i:05d}" for i in range(plan.enrolled)]
    online = names[:n]
    bundle = load_bundle(bundle_dir)
    t0 = time.perf_counter()
    init_broker(root / "broker", FEDERATION, online, bind="127.0.0.1",
                sizing=Sizing(bundle.layout.n_params + 1, plan.enrolled))
    seeds = [os.urandom(32) for _ in names]
    from nacl.signing import SigningKey

    agg_state = root / "aggregator"
    agg_key = load_identity(agg_state).public.raw
    store = open_store(agg_state)
    try:
        for name, s in zip(names, seeds, strict=True):
            store.enroll(name, bytes(SigningKey(s).verify_key))
    finally:
        store.close()
    drops = [int(rng.choice(DROP_POINTS)) if rng.random() < plan.drop_rate else None
             for _ in online]
    setup_s = time.perf_counter() - t0
    broker = LocalMosquitto(root / "broker", secured=root / "broker").start()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    procs, results = [], []
    agg: subprocess.Popen[bytes] | None = None
    try:
        assert broker.proc is not None
        broker_cpu0 = _proc_cpu_s(broker.proc.pid)
        for p, idx in enumerate(np.array_split(np.arange(n), plan.processes)):
            res = root / f"fleet-{p}.json"
            results.append(res)
            spec = WorkerSpec(tuple(online[i] for i in idx), tuple(seeds[i] for i in idx),
                              plan.x[idx], plan.y[idx], tuple(drops[i] for i in idx),
                              bundle_dir, FEDERATION, broker.port, root / "broker", agg_key,
                              res, deadline_s=timeout_s,
                              deltas=root / f"deltas-{p}.npz" if plan.keep_deltas else None)
            procs.append(ctx.Process(target=serve, args=(spec, ready, stop), daemon=True))
            procs[-1].start()
        got = [ready.get(timeout=300) for _ in procs]
        connected = sum(g[0] for g in got)
        connect_s = max(g[1] for g in got)
        if connected < n:
            raise LocalInputError(f"fleet: only {connected} of {n} devices connected")
        cfg = _aggregator_config(root, bundle_dir, broker.port, plan)
        with (root / "aggregator.log").open("wb") as log:
            prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
            agg = subprocess.Popen([sys.executable, *prof, "-m", "genofed", "--log-level", "info",
                                    "aggregator", "run", "--config", str(cfg)],
                                   stdout=log, stderr=subprocess.STDOUT)
        peak, done = [0.0], threading.Event()
        watcher = threading.Thread(target=_watch_rss, args=(agg.pid, peak, done), daemon=True)
        watcher.start()
        t_agg = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        status, usage = 0, None
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(agg.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        done.set()
        agg_wall = time.perf_counter() - t_agg
        if usage is None or not pid:
            raise LocalInputError(f"fleet: the aggregator did not finish in {timeout_s:.0f} s;"
                                  f" see {root / 'aggregator.log'}")
        agg.returncode = os.waitstatus_to_exitcode(status)
        broker_cpu = _proc_cpu_s(broker.proc.pid) - broker_cpu0
        stop.set()
        for proc in procs:
            proc.join(60)
    finally:
        stop.set()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        if agg is not None and agg.poll() is None:
            agg.terminate()
            agg.wait(30)
        broker.stop()
    fleet = [json.loads(r.read_text()) for r in results if r.exists()]
    devices = {k: v for f in fleet for k, v in f["devices"].items()}
    return {"devices": n, "enrolled": plan.enrolled, "setup_s": setup_s,
            "connect_s": connect_s, "aggregator_exit": agg.returncode,
            "aggregator_wall_s": agg_wall,
            "aggregator_cpu_s": usage.ru_utime + usage.ru_stime,
            "aggregator_peak_rss_mb": peak[0], "broker_cpu_s": broker_cpu,
            "fleet_cpu_s": sum(f["cpu_s"] for f in fleet),
            "fleet_busy_s": sum(f["busy_s"] for f in fleet),
            "journal": read_journal(agg_state), "per_device": devices,
            "stages": stage_latencies(devices)}


def stage_latencies(devices: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per stage, seconds from the first device's request to the last device's answer (stage
    0: from the first device starting to train to the last advertisement)."""
    out: dict[str, float] = {}
    for stage in range(5):
        got_key = "-1" if stage == 0 else str(stage)
        got = [float(d["got"][got_key]) for d in devices.values() if got_key in d["got"]]
        sent = [float(d["sent"][str(stage)]) for d in devices.values()
                if str(stage) in d["sent"]]
        if got and sent:
            out[f"stage{stage}_s"] = max(sent) - min(got)
    return out
