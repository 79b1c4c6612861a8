"""What pruning buys on the demo's shape: step time, bundle size and update length of bundles
pruned through `genofed export`, each against the unpruned bundle of the same model (the peer).

A cohort as `genofed simulate --devices 2 --samples-per-device 50 --variants 2000
--panel-size 500` makes it; logreg and MLP (32 hidden units) over its 500-site panel, exported
by the command from one set of random weights (`--init`): unpruned, `--prune 0.5`,
`--prune 0.9`, and `--keep-sites 250`. A step is plain SGD through the step graph on stock
onnxruntime (StepTrainer), batch 32, one thread, the best of five timed repeats after a
warm-up, the bundles of a model taking turns. The bundle is measured as written (init.npz and
mask.npz are stored dense) and as a gzipped tar, as it would travel compressed; the update
length is the unpruned coordinates.

    genofed bench prune      ->  benchmarks/results/prune.json
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("logreg", "mlp")
CASES = {"dense": [], "prune_0.5": ["--prune", "0.5"], "prune_0.9": ["--prune", "0.9"],
         "sites_250": ["--keep-sites", "250"]}
BATCH, THREADS, LR, POOL, WARMUP, REPEATS, STEPS = 32, 1, 0.01, 256, 50, 5, 500


def genofed(*args: str) -> str:
    """Run the command as a coordinator would; its stdout."""
    done = subprocess.run([sys.executable, "-m", "genofed", *args], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"genofed {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def step_ms(bundles: dict[str, Path]) -> dict[str, float]:
    """Milliseconds a step of each bundle, the fastest of REPEATS runs of STEPS; the bundles
    take turns within each repeat, so slow spells of other load hit none of them alone."""
    from genofed.agent.trainer import StepTrainer
    from genofed.models.manifest import load_bundle

    trainers, data = {}, {}
    for case, path in bundles.items():
        b = load_bundle(path)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((POOL, b.n_sites), dtype=np.float32)
        data[case] = (x, (x[:, :20].sum(1) > 0).astype(np.float32))
        trainers[case] = StepTrainer(b, threads=THREADS)
        trainers[case].train(*data[case], steps=WARMUP, batch_size=BATCH, lr=LR,
                             rng=np.random.default_rng(2))
    best = dict.fromkeys(bundles, float("inf"))
    for _ in range(REPEATS):
        for case, t in trainers.items():
            t0 = time.perf_counter()
            t.train(*data[case], steps=STEPS, batch_size=BATCH, lr=LR,
                    rng=np.random.default_rng(2))
            best[case] = min(best[case], (time.perf_counter() - t0) / STEPS)
    return {case: 1000 * s for case, s in best.items()}


def sizes_kb(bundle: Path) -> tuple[float, float]:
    """The bundle's files as written, and as one gzipped tar."""
    raw = sum(f.stat().st_size for f in bundle.iterdir() if f.is_file())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
    return raw / 1024, len(buf.getvalue()) / 1024


def main() -> None:
    from genofed.cli.bench import write_results
    from genofed.export.prune import summary
    from genofed.models.manifest import load_bundle
    from genofed.sim.cohort import simulate

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate(root / "cohort", devices=2, samples_per_device=50, variants=2000,
                 panel_size=500, seed=1)
        panel = root / "cohort" / "panel.tsv"
        for model in MODELS:
            seeded = root / f"{model}-seeded"
            genofed("export", "--model", model, "--panel", str(panel), "--out", str(seeded))
            rng = np.random.default_rng(3)
            init = {k: rng.normal(size=v.shape).astype(np.float32)
                    for k, v in load_bundle(seeded).initial_params().items()}
            np.savez(root / f"{model}-init.npz", **init)  # type: ignore[arg-type]
            bundles, export_s = {}, {}
            for case, flags in CASES.items():
                bundles[case] = root / f"{model}-{case}"
                t0 = time.perf_counter()
                genofed("export", "--model", model, "--panel", str(panel), "--out",
                        str(bundles[case]), "--init", str(root / f"{model}-init.npz"), *flags)
                export_s[case] = time.perf_counter() - t0
            ms = step_ms(bundles)
            for case, out in bundles.items():
                s = summary(load_bundle(out))
                raw, gz = sizes_kb(out)
                rows.append({"model": model, "case": case, "sites": s.sites,
                             "parameters": s.parameters, "update_coords": s.unpruned,
                             "sparsity": round(s.sparsity, 4), "ms_per_step": ms[case],
                             "bundle_kb": raw, "bundle_gz_kb": gz, "export_s": export_s[case]})
    by = {(r["model"], r["case"]): r for r in rows}
    summary_: dict[str, object] = {}
    for model in MODELS:
        peer = by[(model, "dense")]
        for case in CASES:
            if case == "dense":
                continue
            r = by[(model, case)]
            for key in ("ms_per_step", "bundle_kb", "bundle_gz_kb", "update_coords"):
                summary_[f"{model}_{case}_{key}_ratio"] = \
                    float(r[key]) / float(peer[key])  # type: ignore[arg-type]
    write_results("prune", rows, summary_)


if __name__ == "__main__":
    main()
