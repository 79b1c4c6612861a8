"""`genofed agent predict`: the owner's own score from the global model the daemon holds.

The daemon writes the latest verified global model to `state_dir/model.npz`; this reads the
owner's VCF the way training does (pysam, the bundle's panel, the same encoding) and runs
the bundle's forward graph through onnxruntime with those weights. The score is the model's
probability. The bundle's INT8 inference model is not used: its weights were baked in at
export, so it scores with the bundle's initial model, not the federation's current one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genofed.agent.config import AgentConfig
from genofed.agent.daemon import _trusted_key
from genofed.agent.encode import encode_dosages
from genofed.agent.service import model_path
from genofed.agent.trainer import StepTrainer
from genofed.agent.vcf import read_dosages
from genofed.errors import LocalInputError
from genofed.models.manifest import load_bundle


def load_model(cfg: AgentConfig, n_params: int) -> tuple[int, np.ndarray]:
    """(version, flat float32 weights) of the model the daemon saved."""
    path = model_path(cfg)
    try:
        with np.load(path) as z:
            version, w = int(z["version"]), np.asarray(z["weights"], dtype=np.float32)
    except FileNotFoundError:
        raise LocalInputError(f"{path}: no global model yet; the agent writes it when it "
                              f"receives one (is `genofed agent run` running?)") from None
    except (OSError, KeyError, ValueError) as exc:
        raise LocalInputError(f"{path}: not a saved model: {exc}") from None
    if w.shape != (n_params,):
        raise LocalInputError(f"{path}: {w.size} parameters, the bundle has {n_params}")
    return version, w


def predict(cfg: AgentConfig, *, sample: str | None = None) -> dict[str, Any]:
    """Scores of the VCF's samples (or one), with the facts behind them and caveats."""
    bundle = load_bundle(cfg.bundle, trust=_trusted_key(cfg))
    version, weights = load_model(cfg, bundle.layout.n_params)
    panel = bundle.panel()
    dos = read_dosages(cfg.vcf, panel, min_match_rate=cfg.training.min_match_rate)
    rows = list(range(len(dos.samples)))
    if sample is not None:
        if sample not in dos.samples:
            raise LocalInputError(f"{cfg.vcf}: no sample {sample!r}")
        rows = [dos.samples.index(sample)]
    x = encode_dosages(dos.dosage[rows], panel.af)
    trainer = StepTrainer(bundle)
    trainer.set_weights(weights)
    logits = np.asarray(trainer.predict_logits(x), dtype=np.float64)
    scores = 1.0 / (1.0 + np.exp(-logits))
    match = float(dos.report.get("match_rate", float("nan")))
    missing = round((1.0 - match) * len(panel))
    caveats = [
        "the score is the model's probability of the phenotype it was trained on, not a "
        "diagnosis",
        "the model learned from the federation's devices: for ancestries they lack, it may "
        "rank people poorly",
        "no reference distribution was shipped with this model, so the score cannot be "
        "placed among others'",
    ]
    if missing:
        caveats.append(f"{missing} of {len(panel)} panel sites have no call here; they count "
                       f"as the panel's average dosage")
    return {"model": bundle.model, "model_version": version, "panel_sites": len(panel),
            "match_rate": match,
            "scores": [{"sample": dos.samples[i], "score": float(s), "logit": float(g)}
                       for i, s, g in zip(rows, scores, logits, strict=True)],
            "caveats": caveats}
