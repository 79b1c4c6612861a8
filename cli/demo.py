"""`genofed demo`: a whole federation on one machine, on real parts.

Simulate a cohort, export a bundle, start Mosquitto on a free loopback port, start the
aggregator and one agent process per device, and report each round: participants, the mean
local loss of the round's starting model, the test AUC of the model the round produced, bytes
up and down, seconds. Ends with a centralized logistic regression on the pooled data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.agent.encode import encode_dosages
from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.trainer import StepTrainer
from genofed.agent.vcf import read_dosages
from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.service import read_journal, read_model
from genofed.errors import GenofedError
from genofed.models.manifest import Bundle, load_bundle, unflatten
from genofed.models.panel import Panel

ROUND_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Labeled:
    x: np.ndarray
    y: np.ndarray


def load_labeled(vcf: Path, phenotypes: Path, panel: Panel) -> Labeled:
    """Encoded inputs and labels of one VCF (the same path the agent takes)."""
    dos = read_dosages(vcf, panel)
    labels = read_phenotypes(phenotypes)
    rows = [i for i, s in enumerate(dos.samples) if s in labels]
    return Labeled(x=encode_dosages(dos.dosage[rows], panel.af),
                   y=np.array([labels[dos.samples[i]] for i in rows], dtype=np.float32))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def run_demo(out: Path, *, devices: int, rounds: int, model: str, seed: int,
             report: Path | None) -> dict[str, object]:
    """Run the demo end to end; returns (and optionally writes) the report."""
    from genofed.export.bundle import export_bundle
    from genofed.sim.cohort import simulate

    if out.exists() and any(out.iterdir()):
        raise GenofedError(f"{out}: demo output folder exists and is not empty; remove it or "
                           f"pass --out")
    t_start = time.monotonic()
    cohort = out / "cohort"
    say(f"simulating {devices} devices under {cohort} ...")
    simulate(cohort, devices=devices, samples_per_device=200, variants=2000, panel_size=500,
             seed=seed)
    say(f"exporting a {model} bundle ...")
    bundle_dir = export_bundle(model, cohort / "panel.tsv", out / "bundle", seed=seed)
    bundle = load_bundle(bundle_dir)
    panel = bundle.panel()
    device_dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    test = load_labeled(cohort / "test" / "calls.vcf.gz", cohort / "test" / "phenotypes.tsv",
                        panel)

    broker = LocalMosquitto(out / "broker").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        say(f"mosquitto on 127.0.0.1:{broker.port}; starting the aggregator and "
            f"{len(device_dirs)} agents")
        agg_cfg = write_configs(out, bundle_dir, device_dirs, broker.port, rounds=rounds,
                                min_updates=max(1, len(device_dirs) // 2))
        logs = out / "logs"
        logs.mkdir()
        procs.append(spawn(["aggregator", "run", "--config", str(agg_cfg)],
                           logs / "aggregator.log"))
        for d in device_dirs:
            agent_cfg = out / "config" / f"{d.name}.toml"
            procs.append(spawn(["agent", "run", "--config", str(agent_cfg)],
                               logs / f"{d.name}.log"))
        rows = follow_rounds(out / "state" / "aggregator", procs[0], bundle, test, rounds)
        for p in procs[1:]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.terminate()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        broker.stop()

    say("training the centralized baseline on the pooled device data ...")
    central = centralized_auc(device_dirs, panel, test)
    fed = float(rows[-1]["test_auc"]) if rows else float("nan")  # type: ignore[arg-type]
    say(f"\nfederated test AUC {fed:.4f}   centralized logistic regression {central:.4f}   "
        f"difference {fed - central:+.4f}   ({time.monotonic() - t_start:.0f} s in all)")
    result: dict[str, object] = {"model": model, "devices": len(device_dirs), "rounds": rows,
                                 "federated_auc": fed, "centralized_auc": central}
    if report:
        report.write_text(json.dumps(result, indent=2) + "\n")
        say(f"report written to {report}")
    return result


def write_configs(out: Path, bundle: Path, device_dirs: list[Path], port: int, *,
                  rounds: int, min_updates: int) -> Path:
    """Aggregator and agent TOML configs for the demo; returns the aggregator's."""
    cfg = out / "config"
    cfg.mkdir(parents=True)
    agg = cfg / "aggregator.toml"
    agg.write_text(f'federation = "demo"\nbundle = "{bundle.resolve()}"\n'
                   f'state_dir = "{(out / "state" / "aggregator").resolve()}"\n'
                   f'[broker]\nhost = "127.0.0.1"\nport = {port}\n'
                   f"[rounds]\nrounds = {rounds}\nmin_updates = {min_updates}\n"
                   f"target_updates = {len(device_dirs)}\nround_timeout_s = {ROUND_TIMEOUT_S}\n"
                   "local_epochs = 2\nbatch_size = 32\nlr = 0.02\n")
    for i, d in enumerate(device_dirs):
        (cfg / f"{d.name}.toml").write_text(
            f'device_id = "{d.name}"\nfederation = "demo"\nbundle = "{bundle.resolve()}"\n'
            f'vcf = "{(d / "calls.vcf.gz").resolve()}"\n'
            f'phenotypes = "{(d / "phenotypes.tsv").resolve()}"\n'
            f'state_dir = "{(out / "state" / d.name).resolve()}"\n'
            "exit_when_finished = true\n"
            f'[broker]\nhost = "127.0.0.1"\nport = {port}\n'
            f"[training]\nthreads = 1\nseed = {i}\n")
    return agg


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `genofed ARGV` in its own process, logging to `log`."""
    with log.open("wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "genofed", "--log-level", "info", *argv],
                                stdout=fh, stderr=subprocess.STDOUT)


def follow_rounds(state: Path, aggregator: subprocess.Popen[bytes], bundle: Bundle,
                  test: Labeled, rounds: int) -> list[dict[str, object]]:
    """Print each round as the aggregator journals it, with the test AUC of its new model."""
    trainer = StepTrainer(bundle)
    say(f"{'round':>5} {'status':>9} {'devices':>7} {'local loss':>10} {'test AUC':>8} "
        f"{'bytes up':>10} {'bytes down':>10} {'seconds':>7}")
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + rounds * (ROUND_TIMEOUT_S + 30)
    while len([r for r in rows if r["status"] == "completed"]) < rounds:
        journal = read_journal(state)
        for rec in journal[len(rows):]:
            version = int(rec["model_version"]) + (rec["status"] == "completed")  # type: ignore[call-overload]
            weights = read_model(state, version)
            trainer.set_params(unflatten(weights, bundle.params))
            rec["test_auc"] = auc(test.y, trainer.predict_logits(test.x))
            rows.append(rec)
            say(f"{rec['round']:>5} {rec['status']:>9} {rec['participants']:>7} "
                f"{rec['mean_loss']:>10.4f} {rec['test_auc']:>8.4f} {rec['bytes_up']:>10} "
                f"{rec['bytes_down']:>10} {rec['seconds']:>7.2f}")
        if aggregator.poll() is not None and len(read_journal(state)) == len(rows):
            if aggregator.returncode != 0:
                raise GenofedError(f"the aggregator exited with status {aggregator.returncode};"
                                   f" see its log under {state.parent.parent / 'logs'}")
            break
        if time.monotonic() > deadline:
            raise GenofedError("the demo's rounds did not finish in time; see the logs")
        time.sleep(0.2)
    return rows


def centralized_auc(device_dirs: list[Path], panel: Panel, test: Labeled) -> float:
    """Test AUC of scikit-learn's logistic regression on the pooled device data."""
    from sklearn.linear_model import LogisticRegression

    parts = [load_labeled(d / "calls.vcf.gz", d / "phenotypes.tsv", panel) for d in device_dirs]
    x = np.concatenate([p.x for p in parts])
    y = np.concatenate([p.y for p in parts])
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    return auc(test.y, clf.decision_function(test.x))


def say(line: str) -> None:
    """The demo is a CLI command: it prints."""
    print(line, flush=True)
