"""Training checkpoints: parameters, optimizer state, epoch and shuffling RNG, written atomically.

A checkpoint is an .npz of the trainer's `state_dict()` arrays plus `meta`, a JSON string:
format, the bundle's manifest hash (a checkpoint never resumes on another bundle), optimizer,
epochs done, each step's loss so far, and the numpy bit generator's state, so that a resumed
run shuffles exactly as an uninterrupted one would.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed import atomic
from genofed.errors import LocalInputError
from genofed.models.manifest import MANIFEST, Bundle, sha256_file

FORMAT = "genofed-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """What a resumed run needs."""

    arrays: dict[str, np.ndarray]
    optimizer: str
    epoch: int
    losses: list[float]
    rng_state: dict[str, Any]


def bundle_id(bundle: Bundle) -> str:
    """The sha256 of the bundle's manifest, which pins every file of it."""
    return sha256_file(bundle.file(MANIFEST))


def save_checkpoint(path: Path, bundle: Bundle, ck: Checkpoint) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename)."""
    meta = {"format": FORMAT, "bundle": bundle_id(bundle), "optimizer": ck.optimizer,
            "epoch": ck.epoch, "losses": ck.losses, "rng": ck.rng_state}
    buf = io.BytesIO()
    arrays = {f"a/{k}": v for k, v in ck.arrays.items()}
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    atomic.write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, bundle: Bundle) -> Checkpoint:
    """Read a checkpoint written for this bundle; one-line errors otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("a/")}
    except FileNotFoundError:
        raise LocalInputError(f"{path}: checkpoint not found") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise LocalInputError(f"{path}: not a genofed checkpoint: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LocalInputError(f"{path}: not a {FORMAT} file")
    if meta.get("bundle") != bundle_id(bundle):
        raise LocalInputError(f"{path}: checkpoint was written for another bundle than "
                              f"{bundle.path}")
    try:
        return Checkpoint(arrays=arrays, optimizer=str(meta["optimizer"]),
                          epoch=int(meta["epoch"]),
                          losses=[float(v) for v in meta["losses"]], rng_state=dict(meta["rng"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise LocalInputError(f"{path}: malformed checkpoint metadata: {exc}") from None
