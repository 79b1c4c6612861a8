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
