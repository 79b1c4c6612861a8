"""Updates under a pruning mask: only the unpruned coordinates travel (numpy only).

The mask is the bundle's mask.npz (1 = trained, 0 = pruned). Packing keeps the unpruned
entries of a `flatten`-ordered vector in order; unpacking puts them back and zeros the rest.
Every device of a round shares the bundle, hence the mask, so packed updates of a round line
up coordinate by coordinate, which is what secure aggregation of a sum needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from genofed.errors import LocalInputError
from genofed.models.manifest import ParamSpec, flatten, unflatten


def flat_mask(mask: Mapping[str, np.ndarray], specs: Sequence[ParamSpec]) -> np.ndarray:
    """A mask of named 0/1 arrays as one bool vector in `flatten` order."""
    return flatten(mask, specs) != 0


def pack(vec: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The entries of a full flat vector at the unpruned coordinates (float32 copy)."""
    v = np.asarray(vec)
    if v.ndim != 1 or keep.dtype != np.bool_ or v.shape != keep.shape:
        raise LocalInputError(f"vector of shape {list(v.shape)} does not match the mask's "
                              f"[{keep.size}]")
    return v[keep].astype(np.float32)


def unpack(packed: np.ndarray, keep: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """A full flat vector from its unpruned entries; pruned coordinates are exactly 0."""
    p = np.asarray(packed)
    n = int(keep.sum())
    if p.ndim != 1 or p.shape[0] != n:
        raise LocalInputError(f"packed vector has shape {list(p.shape)}, want [{n}] "
                              "(one value per unpruned coordinate)")
    out: np.ndarray = np.zeros(keep.shape, dtype)
    out[keep] = p
    return out


def flatten_unpruned(params: Mapping[str, np.ndarray], specs: Sequence[ParamSpec],
                     keep: np.ndarray) -> np.ndarray:
    """Like `flatten`, keeping only the unpruned coordinates."""
    return pack(flatten(params, specs), keep)


def unflatten_unpruned(packed: np.ndarray, specs: Sequence[ParamSpec],
                       keep: np.ndarray) -> dict[str, np.ndarray]:
    """Like `unflatten`, from the unpruned coordinates only (pruned ones become 0)."""
    return unflatten(unpack(packed, keep), specs)
