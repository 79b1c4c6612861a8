"""One training step, three engines: genofed's step graph on stock onnxruntime, ONNX Runtime's
training API (onnxruntime-training 1.19.2), and PyTorch eager, each in its own process.

MLP (32 hidden units) over a 10,000-site panel and logistic regression over a 100,000-site
panel; batch 32, 2 threads, plain SGD, same initial weights and batches (Trainer.train's
shuffled order over a fixed pool of samples, gathered per step) in every engine; the best
of five timed repeats after a warm-up (the fastest: other load on the machine only adds).
The step-graph worker runs in the device environment (.venv-device: stock onnxruntime, no
torch) when it exists, else in this interpreter. Reports steps per second and the worker's
peak RSS (VmHWM).

    genofed bench train_step      ->  benchmarks/results/train_step.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from genofed.cli.bench import peak_rss_mb

CASES = {"mlp": 10_000, "logreg": 100_000}
BATCH, THREADS, LR, POOL, WARMUP, REPEATS = 32, 2, 0.01, 64, 20, 5
STEPS = {"mlp": 400, "logreg": 150}  # per repeat; the fastest repeat is reported
ROOT = Path(__file__).resolve().parent.parent
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"


def data(sites: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed pool of standardized-dosage-like inputs and labels (same in every worker)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((POOL, sites), dtype=np.float32)
    y = (x[:, :20].sum(1) > 0).astype(np.float32)
    return x, y


def worker(engine: str, model: str, bundle_dir: Path) -> dict[str, object]:
    """Time STEPS[model] steps after WARMUP in this process."""
    x, y = data(CASES[model])
    version = ""
    if engine in ("step", "ort-training"):
        from genofed.agent.ort_training import make_trainer
        from genofed.agent.ortlib import ort
        from genofed.models.manifest import load_bundle

        version = ort.__version__
        trainer = make_trainer(load_bundle(bundle_dir), backend=engine, optimizer="sgd",
                               threads=THREADS)

        def run(steps: int) -> None:
            trainer.train(x, y, steps=steps, batch_size=BATCH, lr=LR,
                          rng=np.random.default_rng(2))
    else:
        import torch

        from genofed.models.manifest import load_bundle
        from genofed.models.zoo import build_model

        version = torch.__version__
        torch.set_num_threads(THREADS)
        b = load_bundle(bundle_dir)
        module = build_model(b.model, b.n_sites, **b.model_config)
        opt = torch.optim.SGD(module.parameters(), lr=LR)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def run(steps: int) -> None:  # the batch order of Trainer.train
            rng = np.random.default_rng(2)
            done = 0
            while done < steps:
                perm = torch.from_numpy(rng.permutation(POOL))
                for start in range(0, POOL, BATCH):
                    if done == steps:
                        break
                    i = perm[start:start + BATCH]
                    opt.zero_grad()
                    loss_fn(module(xt[i]), yt[i]).backward()
                    opt.step()
                    done += 1
    run(WARMUP)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        run(STEPS[model])
        times.append((time.perf_counter() - t0) / STEPS[model])
    seconds = min(times)  # the least disturbed repeat: other load only ever adds time
    return {"steps_per_s": 1.0 / seconds, "ms_per_step": 1000 * seconds,
            "peak_rss_mb": peak_rss_mb(), "version": version}


def main() -> None:
    from genofed.cli.bench import write_results
    from genofed.export.bundle import export_bundle
    from genofed.models.panel import Panel, Site

    step_python = str(DEVICE_PYTHON) if DEVICE_PYTHON.exists() else sys.executable
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, sites in CASES.items():
            rng = np.random.default_rng(0)
            af = rng.uniform(0.05, 0.5, sites)
            panel = Panel("GRCh38", tuple(Site("chr1", 1_000_000 + 10 * i, "A", "G", f"s{i}",
                                               round(float(p), 4)) for i, p in enumerate(af)))
            bundle = export_bundle(model, panel, Path(tmp) / model, hidden=32,
                                   optimizers=("sgd",), ort_training=None)
            for engine in ("step", "ort-training", "pytorch"):
                python = step_python if engine == "step" else sys.executable
                out = subprocess.run([python, __file__, "--worker", engine, "--model", model,
                                      "--bundle", str(bundle)], capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{engine} worker failed:\n{out.stderr[-2000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"model": model, "sites": sites, "engine": engine,
                             "batch": BATCH, "threads": THREADS, **r,
                             "python": "device" if python != sys.executable else "coordinator"})
    by = {(r["model"], r["engine"]): r for r in rows}
    summary: dict[str, object] = {}
    for model in CASES:
        pt = by[(model, "pytorch")]
        for engine, tag in (("step", ""), ("ort-training", "_ort_training")):
            r = by[(model, engine)]
            summary[f"speedup_vs_torch_{model}{tag}"] = \
                float(r["steps_per_s"]) / float(pt["steps_per_s"])  # type: ignore[arg-type]
            summary[f"rss_ratio_vs_torch_{model}{tag}"] = \
                float(r["peak_rss_mb"]) / float(pt["peak_rss_mb"])  # type: ignore[arg-type]
    write_results("train_step", rows, summary)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["step", "ort-training", "pytorch"])
    ap.add_argument("--model", choices=list(CASES))
    ap.add_argument("--bundle", type=Path)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.model, a.bundle)))
    else:
        main()
