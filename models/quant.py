"""The global model as it travels: INT8 with one float32 scale per output channel (numpy only).

A tensor of shape [C, ...] is quantized row by row: scale_c = max |w_c| / 127 and
q = round(w / scale_c), clipped to [-127, 127]. Dequantizing gives w_hat = q * scale_c, so
|w - w_hat| <= scale_c / 2 everywhere; an all-zero row has scale 0 and comes back exactly 0,
and so does every pruned (zero) weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genofed.errors import LocalInputError

if TYPE_CHECKING:
    from genofed.models.manifest import ParamSpec

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


def quantize_params(params: Mapping[str, np.ndarray],
                    specs: Sequence[ParamSpec]) -> dict[str, QuantizedTensor]:
    """Every parameter quantized per channel, in manifest order."""
    out = {}
    for p in specs:
        a = np.asarray(params[p.name])
        if a.shape != p.shape:
            raise LocalInputError(f"quantize: {p.name} has shape {list(a.shape)}, "
                                  f"want {list(p.shape)}")
        out[p.name] = quantize(a)
    return out


def dequantize_params(qparams: Mapping[str, QuantizedTensor]) -> dict[str, np.ndarray]:
    """The float32 parameters a device reconstructs."""
    return {name: dequantize(t) for name, t in qparams.items()}


def n_channels(specs: Sequence[ParamSpec]) -> int:
    """Scales per model: one per row (axis 0) of every parameter."""
    return sum(p.shape[0] for p in specs)


def quantize_flat(params: Mapping[str, np.ndarray],
                  specs: Sequence[ParamSpec]) -> tuple[np.ndarray, np.ndarray]:
    """The whole model as int8 values in `flatten` order and float32 scales, tensor by tensor
    and row by row (the layout of a released model)."""
    q = quantize_params(params, specs)
    return (np.concatenate([q[p.name].q.ravel() for p in specs]),
            np.concatenate([q[p.name].scale for p in specs]))


def dequantize_flat(values: np.ndarray, scales: np.ndarray,
                    specs: Sequence[ParamSpec]) -> dict[str, np.ndarray]:
    """Named float32 parameters from `quantize_flat`'s layout; sizes checked."""
    v, s = np.asarray(values), np.asarray(scales, np.float32)
    n, c = sum(p.size for p in specs), n_channels(specs)
    if v.shape != (n,) or s.shape != (c,) or v.dtype != np.int8:
        raise LocalInputError(f"quantized model has {v.size} {v.dtype} values and {s.size} scales, "
                              f"the model wants {n} int8 values and {c} scales")
    out: dict[str, np.ndarray] = {}
    vo = so = 0
    for p in specs:
        rows = p.shape[0]
        out[p.name] = dequantize(QuantizedTensor(q=v[vo:vo + p.size].reshape(p.shape),
                                                 scale=s[so:so + rows]))
        vo, so = vo + p.size, so + rows
    return out
