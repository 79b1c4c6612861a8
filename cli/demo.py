"""`genofed demo`: a whole federation on one machine, on real parts.

Simulate a cohort, export a bundle, make the federation's PKI and start Mosquitto with it
(TLS only, client certificates, ACL) on a free loopback port, give the aggregator and every
device an Ed25519 identity and enroll the devices, start the aggregator and one agent process
per device, and report each secure round: participants, the test loss and test AUC of the
model the round produced, bytes up and down, seconds, and the worst-served ancestry. Ends with
a centralized logistic regression on the pooled data, and AUCs by ancestry of the federated,
the centralized and a European-only model (`sim/evaluate.py`), naming the gap between the
best- and worst-served ancestry and how much of the European-only model's gap federating
closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nacl.signing import VerifyKey

from genofed.agent.encode import encode_dosages
from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.trainer import StepTrainer
from genofed.agent.vcf import read_dosages
from genofed.aggregator.state import enroll_device, load_identity, read_journal, read_model
from genofed.broker.deploy import Sizing, init_broker
from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.pki import AGGREGATOR, PkiLayout
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, load_bundle
from genofed.models.panel import Panel, load_panel
from genofed.models.signing import ensure_signing_key, save_verify_key
from genofed.sim.evaluate import auc, auc_report, describe, gap_closure, read_ancestry

ROUND_TIMEOUT_S = 120.0
STAGE_TIMEOUT_S = 30.0
DP_CLIP = 0.25  # the demo's honest updates have L2 norms ~0.14 (2 local epochs, lr 0.02)
DP_DELTA = 1e-5
# record-level DP-SGD in each 200-genome clinic: batches of 40 expected, 10 steps a round
DPSGD_RATE = 0.2
DPSGD_CLIP = 1.0


@dataclass(frozen=True)
class Labeled:
    x: np.ndarray
    y: np.ndarray
    ancestry: np.ndarray | None = None  # str per sample, from the cohort's ancestry.tsv


def load_labeled(vcf: Path, phenotypes: Path, panel: Panel) -> Labeled:
    """Encoded inputs and labels of one VCF (the same path the agent takes), with each
    sample's ancestry where the cohort has an ancestry.tsv beside the phenotypes."""
    dos = read_dosages(vcf, panel)
    labels = read_phenotypes(phenotypes)
    rows = [i for i, s in enumerate(dos.samples) if s in labels]
    anc_file = phenotypes.with_name("ancestry.tsv")
    ancestry = None
    if anc_file.exists():
        names = read_ancestry(anc_file)
        ancestry = np.array([names.get(dos.samples[i], "?") for i in rows])
    return Labeled(x=encode_dosages(dos.dosage[rows], panel.af),
                   y=np.array([labels[dos.samples[i]] for i in rows], dtype=np.float32),
                   ancestry=ancestry)


def by_ancestry(test: Labeled, score: np.ndarray) -> dict[str, object] | None:
    """AUC overall and per ancestry with the best-worst gap (None without ancestries)."""
    return None if test.ancestry is None else auc_report(test.y, score, test.ancestry)


def run_demo(out: Path, *, devices: int, rounds: int, model: str, seed: int,
             report: Path | None, local_optimizer: str = "sgd",
             dp_epsilon: float | None = None, dp_unit: str = "record") -> dict[str, object]:
    """Run the demo end to end; returns (and optionally writes) the report. `dp_epsilon`:
    DP with that target per `dp_unit` (`[privacy]`), its spend printed round by round."""
    from genofed.export.bundle import export_bundle
    from genofed.sim.cohort import simulate

    if out.exists() and any(out.iterdir()):
        raise LocalInputError(f"{out}: demo output folder exists and is not empty; remove it or "
                              f"pass --out")
    t_start = time.monotonic()
    cohort = out / "cohort"
    say(f"simulating {devices} devices under {cohort} ...")
    simulate(cohort, devices=devices, samples_per_device=200, variants=2000, panel_size=500,
             seed=seed)
    say(f"exporting a {model} bundle ...")
    record_dp = dp_epsilon is not None and dp_unit == "record"
    # The coordinator's held-out genomes double as the reference genomes the bundle ships for
    # `genofed agent predict` (with their ancestries); they also calibrate its INT8 model.
    ref = read_dosages(cohort / "test" / "calls.vcf.gz", load_panel(cohort / "panel.tsv"))
    names = read_ancestry(cohort / "test" / "ancestry.tsv") \
        if (cohort / "test" / "ancestry.tsv").exists() else None
    bundle_dir = export_bundle(model, cohort / "panel.tsv", out / "bundle", seed=seed,
                               dpsgd=(local_optimizer,) if record_dp else (),
                               reference=ref.dosage, reference_ancestry=None if names is None
                               else [names.get(s, "?") for s in ref.samples])
    bundle = load_bundle(bundle_dir)
    panel = bundle.panel()
    device_dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    test = load_labeled(cohort / "test" / "calls.vcf.gz", cohort / "test" / "phenotypes.tsv",
                        panel)

    # The broker refuses any packet larger than the largest message of this model and
    # federation.
    broker = start_broker(out, [d.name for d in device_dirs],
                          Sizing(bundle.layout.n_params, len(device_dirs)))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        say(f"mosquitto (TLS, client certificates, ACL) on 127.0.0.1:{broker.port}; starting "
            f"the aggregator and {len(device_dirs)} agents")
        agg_cfg = write_configs(out, bundle_dir, device_dirs, broker.port, rounds=rounds,
                                min_participants=len(device_dirs), optimizer=local_optimizer,
                                dp_epsilon=dp_epsilon, dp_unit=dp_unit)
        procs += spawn_federation(out, agg_cfg, [d.name for d in device_dirs])
        rows = follow_rounds(out / "state" / "aggregator", procs[0], bundle, test, rounds,
                             dp=dp_epsilon is not None)
        for p in procs[1:]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.terminate()
    finally:
        stop_federation(procs, broker)

    say("training the centralized baseline on the pooled device data ...")
    central = centralized_auc(device_dirs, panel, test)
    fed = float(rows[-1]["test_auc"]) if rows else float("nan")  # type: ignore[arg-type]
    say(f"\nfederated test AUC {fed:.4f}   centralized logistic regression (L2, CV) "
        f"{central:.4f}   difference {fed - central:+.4f}   "
        f"({time.monotonic() - t_start:.0f} s in all)")
    result: dict[str, object] = {"model": model, "devices": len(device_dirs), "rounds": rows,
                                 "federated_auc": fed, "centralized_auc": central}
    spent = [s for r in rows if isinstance(s := r.get("privacy"), dict)]
    if dp_epsilon is not None:
        last = spent[-1] if spent else None
        say("privacy: no round's sum was unmasked, nothing spent" if last is None else
            f"privacy: epsilon {last['epsilon']:.3f} of the target {dp_epsilon:g} spent at "
            f"delta {last['delta']:g} over {len(spent)} rounds, " + (
                "per device (one clinic's whole cohort), no amplification by sampling assumed"
                if last["unit"] == "device" else "per genome of each clinic's cohort, "
                "DP-SGD's Poisson sampling of genomes assumed") + f", {last['accountant']}")
        result["privacy"] = last
    if test.ancestry is not None and rows:
        result["by_ancestry"] = ancestry_comparison(device_dirs, panel, test, rows[-1])
    if report:
        report.write_text(json.dumps(result, indent=2) + "\n")
        say(f"report written to {report}")
    return result


def start_broker(out: Path, devices: list[str], sizing: Sizing | None = None
                 ) -> LocalMosquitto:
    """The federation's PKI, ACL and Mosquitto config under `out/broker`, and the broker
    running it (TLS only, client certificates, no anonymous access) on a free port; packets
    bounded for `sizing` (default: `Sizing()`)."""
    init_broker(out / "broker", "demo", devices, bind="127.0.0.1", sizing=sizing)
    return LocalMosquitto(out / "broker", secured=out / "broker").start()


def _tls(pki: PkiLayout, name: str, port: int) -> str:
    ident = pki.client(name)
    return (f'[broker]\nhost = "127.0.0.1"\nport = {port}\n'
            f'ca = "{pki.ca_cert.resolve()}"\ncert = "{ident.cert.resolve()}"\n'
            f'key = "{ident.key.resolve()}"\n')


def write_configs(out: Path, bundle: Path, device_dirs: list[Path], port: int, *,
                  rounds: int, min_participants: int, names: list[str] | None = None,
                  stage_timeout_s: float = STAGE_TIMEOUT_S, optimizer: str = "sgd",
                  dp_epsilon: float | None = None, dp_unit: str = "device") -> Path:
    """Aggregator and agent TOML configs for the demo, with each party's TLS identity (from
    `start_broker`) and Ed25519 identity, every device enrolled with the aggregator; returns
    the aggregator's config. `names` gives the devices other ids than their folders';
    `optimizer` is the devices' local optimizer (`[rounds] optimizer`); `dp_epsilon` turns
    on `[privacy]` with that target per `dp_unit`: "device" clips updates at DP_CLIP instead
    of 10, just above the demo's honest update norms (the noise scales with the clip);
    "record" runs DP-SGD (DPSGD_RATE, DPSGD_CLIP)."""
    names = names or [d.name for d in device_dirs]
    pki = PkiLayout(out / "broker")
    cfg = out / "config"
    cfg.mkdir(parents=True)
    agg = cfg / "aggregator.toml"
    agg_state = (out / "state" / "aggregator").resolve()
    agg.write_text(f'federation = "demo"\nbundle = "{bundle.resolve()}"\n'
                   f'state_dir = "{agg_state}"\n' + _tls(pki, AGGREGATOR, port) +
                   f"[rounds]\nrounds = {rounds}\nstage_timeout_s = {stage_timeout_s}\n"
                   "retry_s = 0.5\nlocal_epochs = 2\nbatch_size = 32\nlr = 0.02\n"
                   f'optimizer = "{optimizer}"\n'
                   f"[cohort]\nmin_participants = {min_participants}\n"
                   f"max_participants = {max(min_participants, 100)}\n"
                   f"[codec]\nclip = {DP_CLIP if dp_unit == 'device' and dp_epsilon else 10.0}"
                   "\nscale = 1e6\n"
                   '[server]\noptimizer = "fedavg"\nlr = 1.0\n' +
                   _privacy_section(dp_epsilon, dp_unit))
    aggregator_pub = cfg / "aggregator.pub"
    save_verify_key(aggregator_pub, VerifyKey(load_identity(agg_state).public.raw))
    for i, (name, d) in enumerate(zip(names, device_dirs, strict=True)):
        state = (out / "state" / name).resolve()
        (cfg / f"{name}.toml").write_text(
            f'device_id = "{name}"\nfederation = "demo"\nbundle = "{bundle.resolve()}"\n'
            f'vcf = "{(d / "calls.vcf.gz").resolve()}"\n'
            f'phenotypes = "{(d / "phenotypes.tsv").resolve()}"\n'
            f'state_dir = "{state}"\naggregator_key = "{aggregator_pub.resolve()}"\n'
            "exit_when_finished = true\n" + _tls(pki, name, port) +
            f"[training]\nthreads = 1\nseed = {i}\n")
        key = ensure_signing_key(state / "identity.key")
        enroll_device(agg_state, name, bytes(key.verify_key).hex())
    return agg


def _privacy_section(epsilon: float | None, unit: str) -> str:
    if epsilon is None:
        return ""
    text = f'[privacy]\nepsilon = {epsilon}\ndelta = {DP_DELTA}\nunit = "{unit}"\n'
    return text + (f"sample_rate = {DPSGD_RATE}\nclip = {DPSGD_CLIP}\n" if unit == "record"
                   else "")


def spawn_federation(out: Path, agg_cfg: Path, names: list[str]) -> list[subprocess.Popen[bytes]]:
    """The aggregator, then one agent per device of `write_configs`, each logging to
    `out/logs/NAME.log` (the folder made if needed)."""
    (out / "logs").mkdir(exist_ok=True)
    procs = [spawn(["aggregator", "run", "--config", str(agg_cfg)],
                   out / "logs" / "aggregator.log")]
    procs += [spawn(["agent", "run", "--config", str(out / "config" / f"{n}.toml")],
                    out / "logs" / f"{n}.log") for n in names]
    return procs


def stop_federation(procs: list[subprocess.Popen[bytes]], broker: LocalMosquitto) -> None:
    """Terminate what `spawn_federation` started and is still running, then the broker."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(30)
    broker.stop()


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `genofed ARGV` in its own process, logging to `log`."""
    with log.open("wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "genofed", "--log-level", "info", *argv],
                                stdout=fh, stderr=subprocess.STDOUT)


def follow_rounds(state: Path, aggregator: subprocess.Popen[bytes], bundle: Bundle,
                  test: Labeled, rounds: int, *, dp: bool = False) -> list[dict[str, object]]:
    """Print each round as the aggregator journals it, with the test AUC of its new model
    (and, with `dp`, the epsilon the federation has spent after it)."""
    trainer = StepTrainer(bundle)
    eps = f" {'epsilon':>8}" if dp else ""
    say(f"{'round':>5} {'status':>9} {'devices':>7} {'test loss':>10} {'test AUC':>8}{eps} "
        f"{'bytes up':>10} {'bytes down':>10} {'seconds':>7}  worst-served ancestry (gap)")
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + rounds * (ROUND_TIMEOUT_S + 30)
    while len([r for r in rows if r["status"] == "completed"]) < rounds:
        journal = read_journal(state)
        for rec in journal[len(rows):]:
            version = int(rec["model_version"]) + (rec["status"] == "completed")  # type: ignore[call-overload]
            weights = read_model(state, version)
            trainer.set_weights(weights)
            rec["test_loss"] = float(trainer.mean_loss(test.x, test.y))
            scores = trainer.predict_logits(test.x)
            rec["test_auc"] = auc(test.y, scores)
            rec["test_auc_by_ancestry"] = by_ancestry(test, scores)
            rows.append(rec)
            say(f"{rec['round']:>5} {rec['status']:>9} {rec['participants']:>7} "
                f"{rec['test_loss']:>10.4f} {rec['test_auc']:>8.4f}"
                f"{f' {_epsilon(rec):>8}' if dp else ''} {rec['bytes_up']:>10} "
                f"{rec['bytes_down']:>10} {rec['seconds']:>7.2f}  {_worst(rec)}")
        if aggregator.poll() is not None and len(read_journal(state)) == len(rows):
            if aggregator.returncode != 0:
                raise LocalInputError(f"the aggregator exited with status {aggregator.returncode};"
                                      f" see its log under {state.parent.parent / 'logs'}")
            break
        if time.monotonic() > deadline:
            raise LocalInputError("the demo's rounds did not finish in time; see the logs")
        time.sleep(0.2)
    return rows


def _epsilon(rec: dict[str, object]) -> str:
    """The federation's epsilon after this round (the aggregator's ledger; per device, no
    amplification), or "-" without DP (or if the round's sum was never unmasked)."""
    p = rec.get("privacy")
    return f"{p['epsilon']:.3f}" if isinstance(p, dict) else "-"


def _worst(rec: dict[str, object]) -> str:
    r = rec.get("test_auc_by_ancestry")
    return "" if not isinstance(r, dict) else f"{r['worst']} ({r['gap']:.3f})"


def centralized_auc(device_dirs: list[Path], panel: Panel, test: Labeled) -> float:
    """Test AUC of scikit-learn's logistic regression on the pooled device data."""
    return auc(test.y, centralized_scores(device_dirs, panel, test))


def centralized_scores(device_dirs: list[Path], panel: Panel, test: Labeled,
                       only: str | None = None) -> np.ndarray:
    """Test scores of scikit-learn's L2 logistic regression on the pooled device data (`only`:
    the samples of that ancestry alone), its penalty chosen by cross-validation
    (`sim.evaluate.central_scores`)."""
    from genofed.sim.evaluate import central_scores

    parts = [load_labeled(d / "calls.vcf.gz", d / "phenotypes.tsv", panel) for d in device_dirs]
    x = np.concatenate([p.x for p in parts])
    y = np.concatenate([p.y for p in parts])
    if only is not None:
        keep = np.concatenate([p.ancestry if p.ancestry is not None else
                               np.full(len(p.y), "?") for p in parts]) == only
        x, y = x[keep], y[keep]
    return central_scores(x, y, test.x)


def ancestry_comparison(device_dirs: list[Path], panel: Panel, test: Labeled,
                        last: dict[str, object], single: str = "EUR") -> dict[str, object]:
    """Federated, centralized and `single`-ancestry-only AUCs by ancestry, and how much of the
    single-ancestry model's disadvantage the federated model closes (both readings of
    `sim.evaluate.gap_closure`)."""
    fed = last.get("test_auc_by_ancestry")
    central = by_ancestry(test, centralized_scores(device_dirs, panel, test))
    one = by_ancestry(test, centralized_scores(device_dirs, panel, test, only=single))
    assert isinstance(fed, dict) and central is not None and one is not None
    say(f"by ancestry, federated:            {describe(fed)}")
    say(f"by ancestry, centralized:          {describe(central)}")
    say(f"by ancestry, centralized {single} only: {describe(one)}")
    c = gap_closure(fed, central, one)
    g1, gf = float(one["gap"]), float(fed["gap"])  # type: ignore[arg-type]
    closed, recovered, w = float(c["spread"]), float(c["shortfall"]), c["worst_of_single"]
    say(f"the federated model closes {closed:.0%} of the {single}-only model's best-worst "
        f"gap ({g1:.3f} -> {gf:.3f}; the centralized model closes "
        f"{float(c['spread_centralized']):.0%}), and recovers {recovered:.0%} of its "
        f"shortfall on {w}, its worst-served ancestry, against the centralized model")
    return {"federated": fed, "centralized": central, f"{single}_only": one,
            "gap_closed": closed, "gap_closed_centralized": c["spread_centralized"],
            "shortfall_recovered": recovered, "single_worst": w}


def say(line: str) -> None:
    """The demo is a CLI command: it prints."""
    print(line, flush=True)
