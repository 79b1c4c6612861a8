"""One device's cost per round: genofed's agent against a Flower 1.42 SuperNode with a PyTorch
client, on the demo's workload, in the same run.

The workload is `genofed demo`'s: 6 devices of 200 simulated genomes, a 500-site panel, the
logistic regression, 2 local epochs of SGD at lr 0.02 in batches of 32, FedAvg over all six,
on loopback. Both federations run ROUNDS rounds and one device (dev00) is measured from outside
the same way (`_procmeter`): its process tree's CPU seconds and peak resident set from /proc,
and its bytes both ways counted at the socket by a TCP proxy between it and its server.

genofed: real Mosquitto (TLS, client certificates, ACL), the real aggregator and six agents
(`cli/demo.py`'s helpers); dev00 talks to the broker through the proxy. Its own meter
(`costs.jsonl`: CPU of the process per round, VmHWM, payload bytes) is reported beside it.

Flower: flwr 1.42.0 and torch 2.13.0 (CPU) in their own environment, build/venv-flower
(created here on first use; flwr's and torch's pins never touch .venv): a SuperLink, six
SuperNodes (subprocess isolation: each starts flower-superexec, which starts the ClientApp
process), the App in `benchmarks/flower_app` run with `flwr run`. The ClientApp trains
nn.Linear(500, 1) with BCE-with-logits on each device's features exactly as genofed's agent
encodes them (standardized dosages from the same VCFs, written once to .npz: the Flower client
is spared reading VCFs). dev00's SuperNode talks to the SuperLink's Fleet API through the proxy.

The window measured on each side: from every device connected and idle to the last round
done (the Flower run finished; the genofed aggregator exited), so idle polling between rounds
counts on both sides; per round = window / ROUNDS. Peak RSS is the largest sum of the tree's
VmRSS seen in the window. Flower with SecAgg+ runs the same training through flwr 1.42's
legacy workflow API (its Message-API strategies have no SecAgg+; `genoflwr/secagg_app.py`):
a third run, `*_vs_flower_secagg` in the summary.

    genofed bench device_vs_flower   ->  benchmarks/results/device_vs_flower.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _procmeter import CountingProxy, TreeMeter, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
FLOWER_ENV = ROOT / "build" / "venv-flower"
FLOWER_PINS = ("flwr==1.42.0", "torch==2.13.0")  # torch's CPU wheel where pip finds one
APP = Path(__file__).resolve().parent / "flower_app"
DEVICES, ROUNDS, SEED = 6, 3, 1
TIMEOUT_S = 900


def flower_bin() -> Path:
    """The Flower environment's bin/, created with FLOWER_PINS if missing."""
    bin_ = FLOWER_ENV / "bin"
    if not (bin_ / "flower-supernode").exists():
        print(f"creating {FLOWER_ENV} with {' '.join(FLOWER_PINS)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_ENV)], check=True)
        subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "-q", *FLOWER_PINS],
                       check=True)
    return bin_


def window(meter: TreeMeter, proxy: CountingProxy) -> tuple[float, int]:
    meter.sample()
    up, down = proxy.counts()
    return meter.cpu_s(), up + down


def per_round(meter: TreeMeter, proxy: CountingProxy, start: tuple[float, int]) -> dict[str, Any]:
    cpu, nbytes = window(meter, proxy)
    up, down = proxy.counts()
    return {"peak_rss_mb": round(meter.peak_rss_kb / 1024, 1),
            "cpu_s_per_round": round((cpu - start[0]) / ROUNDS, 4),
            "bytes_per_round": round((nbytes - start[1]) / ROUNDS),
            "bytes_up_total": up, "bytes_down_total": down,
            "processes": sorted({n.split("/")[-1] for n in meter.names.values()})}


# -- genofed ------------------------------------------------------------------------------------

def genofed_side(out: Path) -> tuple[dict[str, Any], Path, list[Path]]:
    from genofed.broker.deploy import Sizing
    from genofed.cli.demo import spawn, start_broker, write_configs
    from genofed.export.bundle import export_bundle
    from genofed.models.manifest import load_bundle
    from genofed.sim.cohort import simulate

    cohort = out / "cohort"
    simulate(cohort, devices=DEVICES, samples_per_device=200, variants=2000, panel_size=500,
             seed=SEED)
    bundle_dir = export_bundle("logreg", cohort / "panel.tsv", out / "bundle", seed=SEED)
    bundle = load_bundle(bundle_dir)
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [d.name for d in dirs]
    broker = start_broker(out, names, Sizing(bundle.layout.n_params, len(dirs)))
    proxy = CountingProxy(broker.port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        agg = write_configs(out, bundle_dir, dirs, broker.port, rounds=ROUNDS,
                            min_participants=len(dirs))
        first = out / "config" / f"{names[0]}.toml"  # the measured device: through the proxy
        text = first.read_text().replace(f"port = {broker.port}\n", f"port = {proxy.port}\n")
        first.write_text(text.replace("exit_when_finished = true\n", ""))  # measured to the end
        (out / "logs").mkdir()
        procs = [spawn(["agent", "run", "--config", str(out / "config" / f"{n}.toml")],
                       out / "logs" / f"{n}.log") for n in names]
        meter = TreeMeter(procs[0].pid)
        wait_for("every agent to connect", lambda: all(
            "connected to" in (out / "logs" / f"{n}.log").read_text() for n in names), 300)
        time.sleep(2)
        meter.reset_peak()
        start = window(meter, proxy)
        procs.append(spawn(["aggregator", "run", "--config", str(agg)],
                           out / "logs" / "aggregator.log"))
        if procs[-1].wait(TIMEOUT_S) != 0:
            raise RuntimeError("the aggregator failed; see " + str(out / "logs"))
        costs = out / "state" / names[0] / "costs.jsonl"
        wait_for("dev00's last round cost", lambda: costs.exists() and len(
            costs.read_text().splitlines()) >= ROUNDS, 60)
        row = per_round(meter, proxy, start)
        meter.stop()
        own = [json.loads(line) for line in costs.read_text().splitlines()]
        row["own_meter"] = {
            "rounds": [r["outcome"] for r in own],
            "cpu_s_per_round": round(float(np.mean([r["cpu_s"] for r in own])), 4),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in own),
            "payload_bytes_per_round": round(float(np.mean(
                [r["bytes_up"] + r["bytes_down"] for r in own])))}
        return row, bundle_dir, dirs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        proxy.stop()
        broker.stop()


# -- Flower -------------------------------------------------------------------------------------

def write_features(bundle_dir: Path, dirs: list[Path], out: Path) -> list[Path]:
    """Each device's features as genofed's agent encodes them, for the Flower ClientApp."""
    from genofed.cli.demo import load_labeled
    from genofed.models.manifest import load_bundle

    panel = load_bundle(bundle_dir).panel()
    paths = []
    for d in dirs:
        lab = load_labeled(d / "calls.vcf.gz", d / "phenotypes.tsv", panel)
        p = out / f"{d.name}.npz"
        np.savez(p, x=lab.x.astype(np.float32), y=lab.y.astype(np.float32))
        paths.append(p)
    return paths


def flower_side(out: Path, features: list[Path], *, secagg: bool = False) -> dict[str, Any]:
    bin_ = flower_bin()
    home = out / "flwr-home"
    home.mkdir(parents=True)
    fleet = free_port()  # flwr 1.42: the Fleet, Control and Runtime APIs on one HTTP server
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{fleet}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": f"{bin_}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # nothing of genofed in Flower's processes
    logs = out / "logs"
    logs.mkdir()
    app = out / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    if secagg:  # the same App with SecAgg+ (genoflwr/secagg_app.py)
        toml = app / "pyproject.toml"
        toml.write_text(toml.read_text()
                        .replace('"genoflwr.server_app:app"', '"genoflwr.secagg_app:server"')
                        .replace('"genoflwr.client_app:app"', '"genoflwr.secagg_app:client"'))
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as fh:
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                 cwd=out, start_new_session=True)
        procs.append(p)
        return p

    proxy = CountingProxy(fleet)
    try:
        start("superlink", [str(bin_ / "flower-superlink"), "--insecure", "--host",
                            "127.0.0.1", "--port", str(fleet),
                            "--disable-runtime-dependency-installation"])
        time.sleep(3)
        nodes = []
        for i, f in enumerate(features):
            link = proxy.port if i == 0 else fleet
            nodes.append(start(f"supernode{i}", [
                str(bin_ / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                "--port", str(free_port()), "--node-config", f'data="{f}" seed={i}']))
        meter = TreeMeter(nodes[0].pid)
        time.sleep(10)  # every SuperNode registered, idle
        meter.reset_peak()
        start_w = window(meter, proxy)
        run = subprocess.run([str(bin_ / "flwr"), "run", str(app), "bench", "--stream"],
                             env=env, cwd=out, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        (logs / "flwr-run.log").write_text(run.stdout + run.stderr)
        said = run.stdout + run.stderr
        done = any(f"[ROUND {ROUNDS}{t}]" in said for t in ("", f"/{ROUNDS}"))  # legacy: no /N
        if run.returncode != 0 or not done:
            raise RuntimeError(f"flwr run failed (status {run.returncode}); see "
                               f"{logs / 'flwr-run.log'}")
        row = per_round(meter, proxy, start_w)
        hwm: dict[str, float] = {}  # the largest VmHWM of each program (one ClientApp a round)
        for pid, kb in meter.hwm_kb.items():
            name = meter.names[pid].split("/")[-1]
            hwm[name] = max(hwm.get(name, 0.0), round(kb / 1024, 1))
        row["hwm_mb_by_process"] = hwm
        meter.stop()
        return row
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, 15)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
        proxy.stop()


def main() -> None:
    from genofed.cli.bench import write_results

    summary: dict[str, Any] = {"devices": DEVICES, "rounds": ROUNDS}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="genofed-vs-flower-") as tmp:
        g, bundle_dir, dirs = genofed_side(Path(tmp) / "genofed")
        rows.append({"system": "genofed", **{k: v for k, v in g.items() if k != "own_meter"}})
        summary["genofed_own_meter"] = g["own_meter"]
        features = write_features(bundle_dir, dirs, Path(tmp))
        # (summary prefix, ratio suffix, the rows' name, SecAgg+?): the same run and ratios
        for prefix, suffix, name, secagg in (
                ("flower", "", "flower 1.42 + torch", False),
                ("flower_secagg", "_secagg", "flower 1.42 + torch, SecAgg+", True)):
            try:
                f = flower_side(Path(tmp) / prefix, features, secagg=secagg)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                summary[f"{prefix}_error"] = f"{name} could not run here: {exc}"
                continue
            rows.append({"system": name,
                         **{k: v for k, v in f.items() if k != "hwm_mb_by_process"}})
            summary[f"{prefix}_hwm_mb_by_process"] = f["hwm_mb_by_process"]
            for key, col in (("rss", "peak_rss_mb"), ("cpu", "cpu_s_per_round"),
                             ("bytes", "bytes_per_round")):
                summary[f"genofed_{col}"] = g[col]
                summary[f"{prefix}_{col}"] = f[col]
                summary[f"{key}_ratio_vs_flower{suffix}"] = \
                    round(g[col] / f[col], 4) if f[col] else None
        summary["goals"] = {"rss": 0.15, "cpu": 0.05, "bytes": 0.3}
    for r in rows:
        r["processes"] = ", ".join(r["processes"])
    write_results("device_vs_flower", rows, summary)


if __name__ == "__main__":
    main()
