"""Bundles for the parity and device tests, and PyTorch's losses on them (the oracle).

Run in the coordinator profile (torch, onnxruntime-training): `python tests/bundles.py DIR`
writes DIR/{logreg,mlp,cnn,logreg_prox}/ (signed bundles; a random 30% of each weight matrix
pruned; logreg with an INT8 inference model), DIR/coordinator.pub (the verify key),
DIR/data.npz (a small cohort) and DIR/reference.json (torch's per-step losses; final weights
in DIR/reference_*.npz). The device profile then trains the same bundles with stock
onnxruntime and compares.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

K = 30
HIDDEN = 16
N, STEPS, BATCH = 200, 50, 32  # 200 = 6 * 32 + 8: every seventh batch is short
LR = {"sgd": 0.2, "sgd_momentum": 0.05, "adam": 0.01}
MU = 0.5
MODELS = ("logreg", "mlp", "cnn")
OPTIMIZERS = ("sgd", "sgd_momentum", "adam")
SEED = 7


def cohort(n: int, seed: int, *, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Standardized dosages (Binomial(2, p)) and labels from one fixed sparse logistic model."""
    truth = np.random.default_rng(1234)
    af = truth.uniform(0.05, 0.5, size=K)
    beta = np.zeros(K)
    beta[:5] = signal * truth.choice([-1.0, 1.0], size=5)
    rng = np.random.default_rng(seed)
    g = rng.binomial(2, af, size=(n, K)).astype(np.float64)
    x = ((g - 2 * af) / np.sqrt(2 * af * (1 - af))).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ beta)))).astype(np.float32)
    return x, y


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The documented order of Trainer.train: reshuffle each pass, keep the short batch."""
    while True:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield perm[start:start + batch_size]


def random_mask(specs: Any, seed: int = 3, frac: float = 0.3) -> dict[str, np.ndarray]:
    """Prune a random `frac` of every weight matrix (biases kept)."""
    rng = np.random.default_rng(seed)
    return {s.name: ((rng.random(s.shape) >= frac) if len(s.shape) >= 2
                     else np.ones(s.shape)).astype(np.float32) for s in specs}


def torch_run(bundle_dir: Path, optimizer: str, x: np.ndarray, y: np.ndarray, *,
              mu: float = 0.0) -> tuple[list[float], dict[str, np.ndarray]]:
    """PyTorch eager (torch.optim) on the bundle's model, mask and initial weights."""
    import torch
    import torch.nn.functional as F

    from genofed.models.manifest import load_bundle
    from genofed.models.zoo import build_model

    b = load_bundle(bundle_dir)
    module = build_model(b.model, b.n_sites, **b.model_config)
    init, mask = b.initial_params(), b.mask()
    ps = list(module.parameters())
    masks = [torch.from_numpy(mask[s.name]) for s in b.params]
    with torch.no_grad():
        for s, p in zip(b.params, ps, strict=True):
            p.copy_(torch.from_numpy(init[s.name]))
    anchor = [p.detach().clone() for p in ps]
    lr = LR[optimizer]
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(ps, lr=lr, momentum=0.9 if optimizer == "sgd_momentum" else 0.0)
    losses = []
    for _, idx in zip(range(STEPS), batches(len(y), BATCH, np.random.default_rng(SEED)),
                      strict=False):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(module(torch.from_numpy(x[idx])),
                                                  torch.from_numpy(y[idx]))
        total = loss + 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(ps, anchor,
                                                                            strict=True))
        total.backward()
        for p, m in zip(ps, masks, strict=True):
            assert p.grad is not None
            p.grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for p, m in zip(ps, masks, strict=True):
                p.mul_(m)
        losses.append(loss.item())
    return losses, {s.name: p.detach().numpy().copy() for s, p in zip(b.params, ps, strict=True)}


def _reference(panel: Any) -> dict[str, Any]:
    """Reference genomes for `genofed agent predict` to place a score among: 60 drawn at the
    panel's frequencies, labelled as two ancestries of 30."""
    rng = np.random.default_rng(17)
    dosage = rng.binomial(2, panel.af, size=(60, len(panel))).astype(np.float32)
    return {"reference": dosage, "reference_ancestry": ["AFR"] * 30 + ["EUR"] * 30}


def export_all(out: Path) -> Path:
    """Write the bundles, key, data and torch's reference losses under out."""
    from genofed.export.bundle import export_bundle
    from genofed.export.stepgraph import param_specs
    from genofed.models.panel import Panel, Site
    from genofed.models.signing import generate_signing_key, save_verify_key
    from genofed.models.zoo import build_model

    out.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    save_verify_key(out / "coordinator.pub", key.verify_key)
    rng = np.random.default_rng(0)
    sites = tuple(Site(chrom="chr2", pos=5000 + i, ref="C", alt="T", id=f"rs{i}",
                       af=round(float(rng.uniform(0.05, 0.5)), 4)) for i in range(K))
    panel = Panel(build="GRCh38", sites=sites)
    x, y = cohort(N, seed=1)
    np.savez(out / "data.npz", x=x, y=y)
    reference: dict[str, Any] = {"lr": LR, "steps": STEPS, "batch": BATCH, "seed": SEED,
                                 "mu": MU, "losses": {}}
    for name in (*MODELS, "logreg_prox"):
        model = name.split("_")[0]
        specs = param_specs(build_model(model, K, hidden=HIDDEN))
        prox = name.endswith("_prox")
        opts = ("sgd", "adam") if prox else OPTIMIZERS
        export_bundle(model, panel, out / name, hidden=HIDDEN, optimizers=opts, proximal=prox,
                      ort_training=None if not prox else False, mask=random_mask(specs),
                      calibration=x if name == "logreg" else None, signing_key=key,
                      **(_reference(panel) if name == "logreg" else {}))
        for opt in opts:
            losses, params = torch_run(out / name, opt, x, y, mu=MU if prox else 0.0)
            reference["losses"][f"{name}/{opt}"] = losses
            np.savez(out / f"reference_{name}_{opt}.npz", **params)
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    return out


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(Path(__file__).parent))
    print(export_all(Path(sys.argv[1])))
