"""Scores through the bundle's INT8 inference model, with the current global model's weights
as they travel (int8 per row, `ParamLayout.quantize`), and the bound on how far such a score
may lie from the float model's.

The input's quantization (`input_quantization`, shared with the export so both sides compute
the same float32 scales): uint8 per site over the whole range the encoding can produce there,
x = (d - 2p) / sqrt(2p(1-p)) for dosages d in [0, 2], so no calibration can miss a genotype
and nothing is ever clipped; the step is s_j = (2 / sd_j) / 255, and 0 (a missing call) is
exact.

The bound, for the logistic regression (logit = w.x + b; the only model whose error this
states): with x^ the quantized input and w^, b^ the dequantized weights,

    |w^.x^ + b^ - (w.x + b)| <= sum_j |w^_j| (s_j / 2 + c_j) + sum_j |w^_j - w_j| |x_j|
                                + |b^ - b| + r,

c_j the distance of x_j outside the site's range (0 for any dosage in [0, 2]), and r a float32
rounding allowance (2^-20 of sum |w_j x_j| + |b|, plus 1e-6). It is a worst case: every
rounding error with the same sign. The score is the logistic of the logit, whose slope is at
most 1/4, so the score's bound is a quarter of the logit's. For other models the two scores
are shown and no bound is claimed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genofed.models.manifest import Bundle

LEVELS = 255  # uint8


def input_quantization(af: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per site: the float32 scale and uint8 zero point of the INT8 model's input."""
    p = np.asarray(af, dtype=np.float64)
    sd = np.sqrt(2.0 * p * (1.0 - p))
    lo, hi = -2.0 * p / sd, (2.0 - 2.0 * p) / sd  # dosage 0 and 2; 0 lies between
    scale = ((hi - lo) / LEVELS).astype(np.float32)
    zero = np.clip(np.rint(-lo / scale), 0, LEVELS).astype(np.uint8)
    return scale, zero


def int8_feeds(bundle: Bundle, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The INT8 model's weight inputs for the flat float32 `weights`."""
    values, scales = bundle.layout.quantize(weights)
    feeds: dict[str, np.ndarray] = {}
    for name, (v, s) in bundle.layout.quantized_tensors(values, scales).items():
        feeds[f"{name}_int8"], feeds[f"{name}_scale"] = v, s
    return feeds


class Int8Scorer:
    """The bundle's INT8 inference model on onnxruntime, fed the current weights."""

    def __init__(self, bundle: Bundle, weights: np.ndarray) -> None:
        import onnxruntime as ort

        assert bundle.int8 is not None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(bundle.file(bundle.int8.file)), opts,
                                            providers=["CPUExecutionProvider"])
        self.feeds = int8_feeds(bundle, weights)

    def logits(self, x: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {"x": np.ascontiguousarray(x, np.float32),
                                         **self.feeds})
        return np.asarray(out, dtype=np.float64).reshape(len(x))


def logit_bound(bundle: Bundle, weights: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """Per row of x, the most the INT8 logit may differ from the float one (logreg only)."""
    if bundle.int8 is None or bundle.model != "logreg":
        return None
    s_x, zero = input_quantization(bundle.panel().af)
    lo = s_x.astype(np.float64) * (0.0 - zero)
    hi = s_x.astype(np.float64) * (LEVELS - zero.astype(np.float64))
    values, scales = bundle.layout.quantize(weights)
    deq = bundle.layout.unflatten(bundle.layout.dequantize(values, scales))
    params = bundle.layout.unflatten(weights)
    (wname,) = [n for n, v in params.items() if v.ndim == 2]
    (bname,) = [n for n, v in params.items() if v.ndim == 1]
    w, wq = params[wname][0].astype(np.float64), deq[wname][0].astype(np.float64)
    b, bq = float(params[bname][0]), float(deq[bname][0])
    x64 = np.asarray(x, dtype=np.float64)
    e = s_x / 2 + np.maximum(0.0, np.maximum(lo - x64, x64 - hi))
    rounding = 2.0 ** -20 * (np.abs(x64) @ np.abs(w) + abs(b)) + 1e-6
    return e @ np.abs(wq) + np.abs(x64) @ np.abs(wq - w) + abs(bq - b) + rounding


def place(score: float, reference: np.ndarray) -> float:
    """Percentile of `score` among the reference scores (ties count half)."""
    below = float(np.count_nonzero(reference < score))
    ties = float(np.count_nonzero(reference == score))
    return round(100.0 * (below + ties / 2) / len(reference), 1)


def placement(score: float, ref_scores: np.ndarray, ancestry: np.ndarray | None
              ) -> dict[str, Any]:
    """Where `score` falls among the reference's scores, overall and within each ancestry."""
    out: dict[str, Any] = {"percentile": place(score, ref_scores)}
    if ancestry is not None:
        out["percentile_by_ancestry"] = {
            str(a): place(score, ref_scores[ancestry == a]) for a in sorted(set(ancestry))}
    return out
