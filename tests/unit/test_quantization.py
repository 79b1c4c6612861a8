"""INT8: the per-channel model that travels, and the bundle's INT8 inference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from support.bundles import K, cohort

from genofed.models.quant import dequantize, quantize

FLOATS = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=FLOATS))
def test_per_channel_reconstruction_error_is_bounded(w: np.ndarray) -> None:
    q = quantize(w)
    back = dequantize(q)
    assert q.q.dtype == np.int8 and q.scale.shape == (w.shape[0],)
    bound = q.scale[:, None] / 2 * (1 + 1e-5) + 1e-30
    assert np.all(np.abs(back - w) <= bound)
    assert np.all(back[w == 0] == 0)  # pruned weights travel as exact zeros
    assert q.nbytes == w.size + 4 * w.shape[0]


def test_scales_are_per_channel() -> None:
    w = np.array([[1000.0, -2.0], [0.001, 0.002]], np.float32)
    back = dequantize(quantize(w))
    assert np.abs(back[1] - w[1]).max() < 1e-5  # a small row is not swamped by a big one


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :])
                  .sum()) / (len(pos) * len(neg)))


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_int8_inference_model_keeps_test_auc(model: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import onnxruntime as ort

    from genofed.agent.ort_training import make_trainer
    from genofed.export.bundle import export_bundle
    from genofed.models.manifest import load_bundle
    from genofed.models.panel import Panel, Site

    # the panel's frequencies are the cohort's (support.bundles.cohort), so its standardized
    # dosages lie in the INT8 model's input range
    af = np.random.default_rng(1234).uniform(0.05, 0.5, size=K)
    panel = Panel("GRCh38", tuple(Site("chr3", 100 + i, "A", "G", f"q{i}", float(af[i]))
                                  for i in range(K)))
    x, y = cohort(1000, seed=11, signal=0.8)
    x_cal, _ = cohort(300, seed=12, signal=0.8)  # the coordinator's reference genotypes
    x_test, y_test = cohort(2000, seed=13, signal=0.8)
    first = export_bundle(model, panel, tmp_path / "float", hidden=16, optimizers=("adam",),
                          ort_training=False)
    t = make_trainer(load_bundle(first), optimizer="adam")
    t.train(x, y, epochs=10, batch_size=32, lr=0.01, rng=np.random.default_rng(0))
    b = load_bundle(export_bundle(model, panel, tmp_path / "int8", hidden=16,
                                  optimizers=("sgd",), ort_training=False, init=t.params,
                                  calibration=x_cal))
    assert b.int8 is not None
    sess = ort.InferenceSession(str(b.file(b.int8.file)), providers=["CPUExecutionProvider"])
    kinds = {n.op_type for n in __import__("onnx").load(str(b.file(b.int8.file))).graph.node}
    assert "QuantizeLinear" in kinds and "DequantizeLinear" in kinds
    from genofed.agent.int8score import int8_feeds

    # the weights enter as the model travels: int8 per row, one scale each
    (int8_logits,) = sess.run(None, {"x": x_test, **int8_feeds(b, b.layout.flatten(t.params))})
    float_logits = make_trainer(b).predict_logits(x_test)
    auc_float, auc_int8 = _auc(y_test, float_logits), _auc(y_test, int8_logits)
    assert auc_float > 0.7  # the model learned something to lose
    assert abs(auc_int8 - auc_float) <= 0.005, (auc_float, auc_int8)


def test_flat_layout_round_trips_a_whole_model() -> None:
    from genofed.models.layout import ParamLayout
    from genofed.models.manifest import ParamSpec

    specs = (ParamSpec("w", "w", (4, 5)), ParamSpec("b", "b", (4,)), ParamSpec("v", "v", (1, 4)))
    layout = ParamLayout.of(specs)
    rng = np.random.default_rng(0)
    params = {s.name: rng.normal(size=s.shape).astype(np.float32) for s in specs}
    values, scales = layout.quantize(layout.flatten(params))
    assert values.dtype == np.int8 and values.shape == (28,)
    assert scales.shape == (layout.n_channels,) == (9,)
    back = layout.dequantize(values, scales)
    err = np.abs(back - layout.flatten(params))
    assert err.max() <= scales.max() / 2 * (1 + 1e-5)
    with pytest.raises(Exception, match="int8 values"):
        layout.dequantize(values[:-1], scales)
