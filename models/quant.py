"""The global model as it travels: INT8 with one float32 scale per output channel (numpy only).

A tensor of shape [C, ...] is quantized row by row: scale_c = max |w_c| / 127 and
q = round(w / scale_c), clipped to [-127, 127]. Dequantizing gives w_hat = q * scale_c, so
|w - w_hat| <= scale_c / 2 everywhere; an all-zero row has scale 0 and comes back exactly 0,
and so does every pruned (zero) weight.

This is the rule for one tensor. A whole model travels in the layout of `ParamLayout.quantize`
(`models/layout.py`): the same rule on the flat vector, tensor by tensor and row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genofed.errors import LocalInputError

QMAX = 127


@dataclass(frozen=True)
class QuantizedTensor:
    """INT8 values and the float32 scale of each channel (axis 0)."""

    q: np.ndarray
    scale: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: one per value, four per scale."""
        return int(self.q.size + 4 * self.scale.size)


def quantize(a: np.ndarray) -> QuantizedTensor:
    """Per-channel symmetric INT8 quantization along axis 0."""
    w = np.asarray(a, dtype=np.float32)
    if w.ndim == 0 or not np.isfinite(w).all():
        raise LocalInputError("quantize: need a finite tensor with at least one axis")
    rows = w.reshape(w.shape[0], -1)
    scale = (np.abs(rows).max(axis=1) / QMAX).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / safe[:, None]), -QMAX, QMAX).astype(np.int8)
    return QuantizedTensor(q=q.reshape(w.shape), scale=scale)


def dequantize(t: QuantizedTensor) -> np.ndarray:
    """float32 values q * scale, channel by channel."""
    q = t.q.reshape(t.q.shape[0], -1).astype(np.float32)
    return (q * t.scale[:, None]).reshape(t.q.shape).astype(np.float32)
