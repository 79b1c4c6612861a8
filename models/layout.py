"""The one flat layout of a model's parameters, shared by the device and the aggregator.

A model's parameters are named tensors (`ParamSpec`, in manifest order). Flat, they are one
vector: tensor after tensor, each in C order. On that vector sit

- the pruning mask: `keep[i]` says coordinate i is trained. An update carries the trained
  coordinates only, in flat order (`trained`); `expand` puts them back with every pruned
  coordinate exactly 0. Every device of a round shares the bundle, hence the mask, so updates
  line up coordinate by coordinate, which secure aggregation of a sum needs.
- the quantization channels of a released model: one per row (axis 0) of every tensor, in
  flat order, each a contiguous run of the vector. `quantize` is `models/quant.py`'s
  per-channel INT8 rule applied run by run: int8 values in flat order and one float32 scale
  per channel.

numpy only. Sizes that do not fit raise LocalInputError naming what is wrong; a caller that
got the vector from the network turns that into a MessageError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from genofed.errors import LocalInputError
from genofed.models.quant import QMAX

if TYPE_CHECKING:
    from genofed.models.manifest import ParamSpec


@dataclass(frozen=True)
class _Block:
    """One tensor's run of the flat vector: `rows` channels of `cols` values each."""

    name: str
    shape: tuple[int, ...]
    offset: int  # first coordinate in the flat vector
    rows: int
    cols: int
    channel: int  # first channel (scale) of the tensor

    @property
    def end(self) -> int:
        return self.offset + self.rows * self.cols


@dataclass(frozen=True, eq=False)
class ParamLayout:
    """The flat layout of `specs`, with `keep` (bool, one per coordinate) marking what trains.

    Build it with `ParamLayout.of(specs, mask)` from named 0/1 arrays, or with the flat bool
    vector directly; `Bundle.layout` is the bundle's own.
    """

    specs: tuple[ParamSpec, ...]
    keep: np.ndarray = field(repr=False)
    n_params: int = field(init=False)
    n_trained: int = field(init=False)
    n_channels: int = field(init=False)
    _blocks: tuple[_Block, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        blocks, offset, channel = [], 0, 0
        for p in self.specs:
            rows = p.shape[0] if p.shape else 1
            blocks.append(_Block(p.name, p.shape, offset, rows, p.size // rows, channel))
            offset, channel = offset + p.size, channel + rows
        keep = np.asarray(self.keep)
        if keep.dtype != np.bool_ or keep.shape != (offset,):
            raise LocalInputError(f"pruning mask is {keep.dtype}{list(keep.shape)}, want "
                                  f"bool[{offset}] (one per parameter)")
        keep = keep.copy()
        keep.flags.writeable = False
        object.__setattr__(self, "specs", tuple(self.specs))
        object.__setattr__(self, "keep", keep)
        object.__setattr__(self, "n_params", offset)
        object.__setattr__(self, "n_trained", int(np.count_nonzero(keep)))
        object.__setattr__(self, "n_channels", channel)
        object.__setattr__(self, "_blocks", tuple(blocks))

    @classmethod
    def of(cls, specs: Sequence[ParamSpec],
           mask: Mapping[str, np.ndarray] | None = None) -> ParamLayout:
        """The layout of `specs` under a mask of named 0/1 arrays (None: nothing pruned)."""
        n = sum(p.size for p in specs)
        if mask is None:
            return cls(tuple(specs), np.ones(n, np.bool_))
        flat = cls(tuple(specs), np.ones(n, np.bool_)).flatten(mask, what="pruning mask")
        if not np.isin(flat, (0.0, 1.0)).all():
            raise LocalInputError("pruning mask values must be 0 or 1")
        return cls(tuple(specs), flat != 0)

    def flatten(self, params: Mapping[str, np.ndarray], *,
                what: str = "parameters") -> np.ndarray:
        """Named tensors as one float32 vector in layout order (a new array)."""
        missing = [p.name for p in self.specs if p.name not in params]
        extra = sorted(set(params) - {p.name for p in self.specs})
        if missing or extra:
            raise LocalInputError(f"{what} do not match the model: missing {missing}, "
                                  f"unexpected {extra}")
        out = np.empty(self.n_params, np.float32)
        for b in self._blocks:
            a = np.asarray(params[b.name])
            if a.shape != b.shape:
                raise LocalInputError(f"{what}: {b.name} has shape {list(a.shape)}, "
                                      f"want {list(b.shape)}")
            out[b.offset:b.end] = a.ravel()
        return out

    def unflatten(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """One float32 array per tensor (copies), in manifest order."""
        v = self._full(vec, "parameter vector")
        return {b.name: v[b.offset:b.end].astype(np.float32).reshape(b.shape)
                for b in self._blocks}

    def quantized_tensors(self, values: np.ndarray, scales: np.ndarray
                          ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`quantize`'s output per tensor: (int8 values in the tensor's shape, its row scales),
        as the bundle's INT8 inference model takes them."""
        self.dequantize(values, scales)  # checks dtypes and sizes
        return {b.name: (values[b.offset:b.end].reshape(b.shape),
                         scales[b.channel:b.channel + b.rows]) for b in self._blocks}

    def tensors(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a float32 flat vector as its named tensors: writing one writes `vec`."""
        v = self._full(vec, "parameter vector")
        if v.dtype != np.float32 or not v.flags.c_contiguous:
            raise LocalInputError(f"parameter vector is {v.dtype}, want contiguous float32")
        return {b.name: v[b.offset:b.end].reshape(b.shape) for b in self._blocks}

    def trained(self, vec: np.ndarray) -> np.ndarray:
        """The trained (unpruned) coordinates of a full vector, in layout order: what an update
        carries. A copy, in `vec`'s dtype."""
        return self._full(vec, "parameter vector")[self.keep]

    def expand(self, packed: np.ndarray) -> np.ndarray:
        """A full vector from its trained coordinates, in `packed`'s dtype; every pruned
        coordinate is exactly 0."""
        p = np.asarray(packed)
        if p.shape != (self.n_trained,):
            raise LocalInputError(f"packed vector has shape {list(p.shape)}, want "
                                  f"[{self.n_trained}] (one value per trained coordinate)")
        out = np.zeros(self.n_params, p.dtype)
        out[self.keep] = p
        return out

    def name_at(self, i: int) -> str:
        """The name of the tensor that holds flat coordinate i."""
        if not 0 <= i < self.n_params:
            raise IndexError(f"coordinate {i} of {self.n_params}")
        return next(b.name for b in self._blocks if i < b.end)

    def quantize(self, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A model as it travels: int8 values in layout order, one float32 scale per channel.

        Channel c of a run w: scale_c = max |w_c| / 127, q = round(w / scale_c) clipped to
        [-127, 127]; an all-zero channel has scale 0 and values 0.
        """
        v = np.asarray(self._full(vec, "parameter vector"), np.float32)
        if not np.isfinite(v).all():
            bad = int(np.flatnonzero(~np.isfinite(v))[0])
            raise LocalInputError(f"cannot quantize: {self.name_at(bad)} has non-finite values")
        values = np.empty(self.n_params, np.int8)
        scales = np.empty(self.n_channels, np.float32)
        for b in self._blocks:
            w = v[b.offset:b.end].reshape(b.rows, b.cols)
            s = scales[b.channel:b.channel + b.rows]
            s[:] = np.abs(w).max(axis=1) / QMAX
            safe = np.where(s > 0, s, np.float32(1.0))
            q = np.rint(w / safe[:, None])
            np.clip(q, -QMAX, QMAX, out=q)
            values[b.offset:b.end] = q.ravel()
        return values, scales

    def dequantize(self, values: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """The float32 vector q * scale of `quantize`'s output, channel by channel."""
        q, s = np.asarray(values), np.asarray(scales)
        if q.dtype != np.int8 or q.shape != (self.n_params,) or s.shape != (self.n_channels,):
            raise LocalInputError(f"quantized model has {q.size} {q.dtype} values and {s.size} "
                                  f"scales, the model wants {self.n_params} int8 values and "
                                  f"{self.n_channels} scales")
        s = s.astype(np.float32, copy=False)
        if not (np.isfinite(s).all() and (s >= 0).all()):
            raise LocalInputError("quantized model: scales must be finite and non-negative")
        out = q.astype(np.float32)
        for b in self._blocks:
            rows = out[b.offset:b.end].reshape(b.rows, b.cols)  # a view: scaled in place
            np.multiply(rows, s[b.channel:b.channel + b.rows, None], out=rows)
        return out

    def _full(self, vec: np.ndarray, what: str) -> np.ndarray:
        v = np.asarray(vec)
        if v.shape != (self.n_params,):
            raise LocalInputError(f"{what} has shape {list(v.shape)}, want [{self.n_params}] "
                                  "(one value per parameter)")
        return v
