"""One device's local round: genofed's step graph on onnxruntime vs PyTorch eager.

Same data, model, initial weights, epochs and batch size; each engine in its own process (so
the onnxruntime worker never has torch loaded and peak RSS is its own). Reports seconds per
local round, peak RSS of the worker, and the bytes of the float32 update that round sends.

    genofed bench local_round      ->  benchmarks/results/local_round.json
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

SITES, SAMPLES, EPOCHS, BATCH, LR, REPEATS = 2000, 400, 2, 32, 0.02, 5


def worker(engine: str, bundle_dir: Path, data: Path) -> dict[str, float]:
    """Time REPEATS local rounds in this process; returns seconds per round and peak RSS."""
    d = np.load(data)
    x, y = d["x"], d["y"]
    rng = np.random.default_rng(0)
    if engine == "onnxruntime":
        from genofed.agent.trainer import StepTrainer
        from genofed.models.manifest import load_bundle

        trainer = StepTrainer(load_bundle(bundle_dir), threads=1)
        init = dict(trainer.params)

        def one_round() -> None:
            trainer.set_params(init)
            trainer.train(x, y, epochs=EPOCHS, batch_size=BATCH, lr=LR, rng=rng)
    else:
        import torch

        from genofed.models.manifest import load_bundle
        from genofed.models.zoo import build_model

        torch.set_num_threads(1)
        b = load_bundle(bundle_dir)
        model = build_model(b.model, SITES, **b.model_config)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def one_round() -> None:
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            for _ in range(EPOCHS):
                for idx in np.array_split(rng.permutation(len(y)), -(-len(y) // BATCH)):
                    opt.zero_grad()
                    loss_fn(model(xt[idx]), yt[idx]).backward()
                    opt.step()
    one_round()  # warm-up
    t0 = time.perf_counter()
    for _ in range(REPEATS):
        one_round()
    seconds = (time.perf_counter() - t0) / REPEATS
    return {"seconds_per_round": seconds, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    from genofed.cli.bench import write_results
    from genofed.export.bundle import export_bundle
    from genofed.models.manifest import load_bundle
    from genofed.models.panel import Panel, Site

    rng = np.random.default_rng(1)
    af = rng.uniform(0.05, 0.5, SITES)
    panel = Panel("GRCh38", tuple(Site("chr22", 16_000_000 + 10 * i, "A", "G", f"s{i}", float(p))
                                  for i, p in enumerate(af)))
    x = rng.standard_normal((SAMPLES, SITES)).astype(np.float32)
    y = (x[:, :20].sum(1) + rng.standard_normal(SAMPLES) > 0).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "panel.tsv").write_text(panel.to_tsv())
        np.savez(t / "data.npz", x=x, y=y)
        for model in ("logreg", "mlp"):
            bundle = export_bundle(model, t / "panel.tsv", t / model)
            n_params = load_bundle(bundle).n_params
            for engine in ("onnxruntime", "pytorch"):
                out = subprocess.run([sys.executable, __file__, "--worker", engine,
                                      "--bundle", str(bundle), "--data", str(t / "data.npz")],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"model": model, "engine": engine, "sites": SITES,
                             "samples": SAMPLES, "epochs": EPOCHS, **r,
                             "update_bytes": 4 * n_params})
    by = {(r["model"], r["engine"]): r for r in rows}
    summary = {}
    for model in ("logreg", "mlp"):
        ort, pt = by[(model, "onnxruntime")], by[(model, "pytorch")]
        summary[f"speedup_vs_torch_{model}"] = pt["seconds_per_round"] / ort["seconds_per_round"]
        summary[f"rss_ratio_vs_torch_{model}"] = ort["peak_rss_mb"] / pt["peak_rss_mb"]
    write_results("local_round", rows, summary)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["onnxruntime", "pytorch"])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--data", type=Path)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.bundle, a.data)))
    else:
        main()
