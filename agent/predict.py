"""`genofed agent predict`: the owner's own score from the global model the daemon holds.

The daemon writes the latest verified global model to `state_dir/model.npz`; this reads the
owner's VCF the way training does (pysam, the bundle's panel, the same encoding) and scores it
twice with those weights: through the bundle's INT8 inference model (the weights as they travel,
int8 per row; `int8score.py`), the score the owner is given, and through the float forward
graph; with the bound the INT8 model's quantization puts on their difference, where it has
one. A bundle without an INT8 model gives the float score alone.

Where the score falls: the bundle's reference genotypes (reference.npz, public genomes the
coordinator ships with the model) are scored here with the same model, so the distribution
always belongs to the model version that scored the owner; the percentile is overall and
within each of the reference's ancestries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genofed.agent.config import AgentConfig
from genofed.agent.daemon import _trusted_key
from genofed.agent.encode import encode_dosages
from genofed.agent.int8score import Int8Scorer, logit_bound, placement
from genofed.agent.service import model_path
from genofed.agent.trainer import StepTrainer
from genofed.agent.vcf import read_dosages
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, load_bundle


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


def _reference(bundle: Bundle) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The reference genotypes' encoded inputs and ancestries, if the bundle ships them."""
    if bundle.reference is None:
        return None
    path = bundle.file(bundle.reference)
    try:
        with np.load(path) as z:
            dosage = np.asarray(z["dosage"], dtype=np.float32)
            ancestry = np.asarray(z["ancestry"]).astype(str) if "ancestry" in z else None
    except (OSError, KeyError, ValueError) as exc:
        raise LocalInputError(f"{path}: not a reference set: {exc}") from None
    return encode_dosages(dosage, bundle.panel().af), ancestry


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
    int8 = Int8Scorer(bundle, weights) if bundle.int8 is not None else None

    def logits(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        f = np.asarray(trainer.predict_logits(v), dtype=np.float64)
        return f, None if int8 is None else int8.logits(v)

    lf, lq = logits(x)
    bound = logit_bound(bundle, weights, x)
    given = lf if lq is None else lq  # the owner's score: the INT8 model's where there is one
    ref = _reference(bundle)
    ref_scores = None
    if ref is not None:  # scored as the owner is: the same model, the same path
        rf, rq = logits(ref[0])
        ref_scores = _sigmoid(rf if rq is None else rq)
    scores = []
    for k, i in enumerate(rows):
        r: dict[str, Any] = {"sample": dos.samples[i], "score": float(_sigmoid(given[k])),
                             "logit": float(given[k]), "score_float": float(_sigmoid(lf[k])),
                             "logit_float": float(lf[k])}
        if lq is not None:
            r["int8_difference"] = float(abs(lq[k] - lf[k]))
        if bound is not None:
            r["int8_logit_tolerance"] = float(bound[k])
            r["int8_score_tolerance"] = float(bound[k] / 4)
            r["within_tolerance"] = bool(abs(lq[k] - lf[k]) <= bound[k]) if lq is not None \
                else None
        if ref is not None and ref_scores is not None:
            r.update(placement(r["score"], ref_scores, ref[1]))
        scores.append(r)
    match = float(dos.report.get("match_rate", float("nan")))
    reference = None if ref is None else _describe_reference(ref[1], len(ref[0]))
    return {"model": bundle.model, "model_version": version, "panel_sites": len(panel),
            "match_rate": match, "scored_by": "int8" if lq is not None else "float",
            "reference": reference, "scores": scores,
            "caveats": _caveats(reference, round((1.0 - match) * len(panel)), len(panel))}


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))


def _describe_reference(ancestry: np.ndarray | None, n: int) -> dict[str, Any]:
    groups = None if ancestry is None else {
        str(a): int(np.count_nonzero(ancestry == a)) for a in sorted(set(ancestry))}
    return {"genomes": n, "ancestries": groups}


def _caveats(reference: dict[str, Any] | None, missing: int, sites: int) -> list[str]:
    out = ["the score is the model's probability of the phenotype it was trained on, not a "
           "diagnosis",
           "the model learned from the federation's devices: for ancestries they lack, it may "
           "rank people poorly"]
    if reference is None:
        out.append("no reference genomes were shipped with this model, so the score cannot "
                   "be placed among others'")
    else:
        groups = reference["ancestries"]
        mix = "" if not groups else " (" + ", ".join(f"{a} {n}" for a, n in groups.items()) + ")"
        out.append(f"the percentile places the score among {reference['genomes']} reference "
                   f"genomes{mix}; compare within your own ancestry where it is listed")
    if missing:
        out.append(f"{missing} of {sites} panel sites have no call here; they count as the "
                   f"panel's average dosage")
    return out
