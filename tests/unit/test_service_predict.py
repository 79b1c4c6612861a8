"""`genofed agent predict`: the owner's score from the saved global model, checked against
the model written out in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.agents import agent_config

from genofed.agent.config import load_agent_config
from genofed.agent.encode import encode_dosages
from genofed.agent.predict import predict
from genofed.agent.service import model_path
from genofed.agent.vcf import read_dosages
from genofed.cli import main as cli
from genofed.models.manifest import load_bundle


def test_predict_matches_the_model_in_numpy(tmp_path: Path, cohort: Path, logreg_bundle: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = agent_config(tmp_path, cohort, logreg_bundle, "step")
    cfg = load_agent_config(cfg_path)
    with pytest.raises(Exception, match="no global model yet"):
        predict(cfg)
    bundle = load_bundle(logreg_bundle)
    w = np.random.default_rng(4).normal(0, 0.1, bundle.layout.n_params).astype(np.float32)
    np.savez(model_path(cfg), version=np.int64(7), weights=w)
    got = predict(cfg)
    assert got["model_version"] == 7
    # The oracle: x @ W.T + b with the same weights, on the same encoded calls.
    panel = bundle.panel()
    dos = read_dosages(cfg.vcf, panel)
    x = encode_dosages(dos.dosage, panel.af).astype(np.float64)
    params = bundle.layout.unflatten(w)
    weight = next(v for v in params.values() if v.ndim == 2)
    bias = next(v for v in params.values() if v.ndim == 1)
    logits = x @ weight.astype(np.float64).T[:, 0] + float(bias[0])
    assert [r["sample"] for r in got["scores"]] == list(dos.samples)
    np.testing.assert_allclose([r["logit"] for r in got["scores"]], logits, atol=1e-4)
    np.testing.assert_allclose([r["score"] for r in got["scores"]],
                               1 / (1 + np.exp(-logits)), atol=1e-5)
    # One sample, as JSON, through the command.
    assert cli.main(["agent", "predict", "--config", str(cfg_path), "--json", "--sample",
                     dos.samples[3]]) == 0
    one = json.loads(capsys.readouterr().out)
    assert [r["sample"] for r in one["scores"]] == [dos.samples[3]]
    assert one["scores"][0]["logit"] == pytest.approx(logits[3], abs=1e-4)
    assert any("ancestr" in c for c in one["caveats"])
    assert cli.main(["agent", "predict", "--config", str(cfg_path), "--sample",
                     "nobody"]) == cli.EXIT_BAD_INPUT


def test_predict_scores_through_the_int8_model_with_the_current_weights(
        tmp_path: Path, cohort: Path) -> None:
    """The owner's score comes from the bundle's INT8 model fed the saved global model (not the
    export's weights), agrees with the float model within the INT8 model's bound, and is placed
    among the reference genomes the bundle ships, scored by the same model."""
    from genofed.agent.int8score import input_quantization, logit_bound
    from genofed.export.bundle import export_bundle
    from genofed.sim.evaluate import read_ancestry

    panel = load_bundle(export_bundle("logreg", cohort / "panel.tsv", tmp_path / "plain",
                                      optimizers=("sgd",), ort_training=False)).panel()
    test = read_dosages(cohort / "test" / "calls.vcf.gz", panel)
    names = read_ancestry(cohort / "test" / "ancestry.tsv")
    bundle_dir = export_bundle("logreg", cohort / "panel.tsv", tmp_path / "int8",
                               optimizers=("sgd",), ort_training=False, reference=test.dosage,
                               reference_ancestry=[names[s] for s in test.samples])
    bundle = load_bundle(bundle_dir)
    assert bundle.int8 is not None and bundle.reference == "reference.npz"
    cfg_path = agent_config(tmp_path, cohort, bundle_dir, "step")
    cfg = load_agent_config(cfg_path)
    w = np.random.default_rng(5).normal(0, 0.3, bundle.layout.n_params).astype(np.float32)
    np.savez(model_path(cfg), version=np.int64(9), weights=w)
    got = predict(cfg)
    assert got["scored_by"] == "int8" and got["model_version"] == 9
    # The oracle: the dequantized weights on the uint8-quantized inputs, in numpy.
    dos = read_dosages(cfg.vcf, panel)
    x = encode_dosages(dos.dosage, panel.af).astype(np.float64)
    s_x, z_x = (a.astype(np.float64) for a in input_quantization(panel.af))

    def quantized(v: np.ndarray) -> np.ndarray:
        return (np.clip(np.rint(v / s_x) + z_x, 0, 255) - z_x) * s_x

    xq = quantized(x)
    deq = bundle.layout.unflatten(bundle.layout.dequantize(*bundle.layout.quantize(w)))
    weight = next(v for v in deq.values() if v.ndim == 2)[0].astype(np.float64)
    bias = float(next(v for v in deq.values() if v.ndim == 1)[0])
    np.testing.assert_allclose([r["logit"] for r in got["scores"]], xq @ weight + bias,
                               atol=1e-4)
    fl = [r["logit_float"] for r in got["scores"]]
    diff = np.abs(np.array([r["logit"] for r in got["scores"]]) - fl)
    tol = np.array([r["int8_logit_tolerance"] for r in got["scores"]])
    assert np.all(diff <= tol) and all(r["within_tolerance"] for r in got["scores"])
    assert diff.max() > 0  # the INT8 path really ran: its rounding shows
    assert np.all([abs(r["score"] - r["score_float"]) <= r["int8_score_tolerance"]
                   for r in got["scores"]])
    np.testing.assert_allclose(tol, logit_bound(bundle, w, x), rtol=1e-6)
    # The bound is the quantization's, not a catch-all: far below the logits' own spread.
    assert tol.max() < 0.25 * np.std(fl)
    # Placed among the reference genomes, scored by the same INT8 model.
    ref_x = encode_dosages(test.dosage, panel.af).astype(np.float64)
    ref_xq = quantized(ref_x)
    ref_scores = 1 / (1 + np.exp(-(ref_xq @ weight + bias)))
    first = got["scores"][0]
    want = 100 * (np.sum(ref_scores < first["score"]) + 0.5 * np.sum(
        ref_scores == first["score"])) / len(ref_scores)
    assert first["percentile"] == pytest.approx(want, abs=0.6)
    assert got["reference"]["genomes"] == len(test.samples)
    assert set(first["percentile_by_ancestry"]) == set(names.values())
    assert any("reference genomes" in c for c in got["caveats"])
