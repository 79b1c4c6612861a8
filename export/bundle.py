"""Write a model bundle (see genofed.models.manifest for the format) for a panel.

The bundle is built in a temporary sibling directory and renamed into place, so a reader sees
either the old bundle or the new one. Bundles are reproducible: the same model, panel and seed
give byte-identical files, hence identical hashes.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from genofed.errors import GenofedError
from genofed.export.stepgraph import export_forward, export_step, param_specs
from genofed.models.manifest import FORMAT, MANIFEST, sha256_file
from genofed.models.panel import load_panel
from genofed.models.zoo import build_model, model_config

log = logging.getLogger(__name__)

INPUT_ENCODING = {"kind": "standardized_dosage", "missing": "2p"}
LOSS = "bce_with_logits_mean"
INIT_FILE = "init.npz"
PANEL_FILE = "panel.tsv"


def export_bundle(model: str, panel_path: Path, out: Path, *, hidden: int = 32,
                  seed: int = 0) -> Path:
    """Export `model` over the panel at panel_path as a bundle directory at out."""
    out = Path(out)
    _check_target(out)
    panel = load_panel(panel_path)
    module = build_model(model, len(panel), hidden=hidden, seed=seed)
    specs = param_specs(module)
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        forward = export_forward(module, len(panel), tmp / "forward.onnx")
        step = export_step(module, len(panel), tmp / "step_sgd.onnx")
        init = {s.name: p.detach().numpy().astype(np.float32)
                for s, p in zip(specs, module.parameters(), strict=True)}
        _write_npz(tmp / INIT_FILE, init)
        (tmp / PANEL_FILE).write_text(panel.to_tsv())
        files = {f: sha256_file(tmp / f)
                 for f in (forward.file, step.file, INIT_FILE, PANEL_FILE)}
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "model": model,
            "model_config": model_config(model, hidden=hidden, seed=seed),
            "panel": {"sha256": panel.sha256(), "n_sites": len(panel), "build": panel.build},
            "input_encoding": INPUT_ENCODING,
            "loss": LOSS,
            "parameters": [{"name": s.name, "torch_name": s.torch_name,
                            "shape": list(s.shape), "dtype": s.dtype} for s in specs],
            "graphs": {
                "forward": {"file": forward.file, "inputs": list(forward.inputs),
                            "outputs": list(forward.outputs)},
                "step": {"file": step.file, "optimizer": step.optimizer,
                         "inputs": list(step.inputs), "outputs": list(step.outputs)},
            },
            "init": INIT_FILE,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle %s: %s over %d sites, %d parameters, exported in %.1fs", out, model,
             len(panel), sum(s.size for s in specs), time.perf_counter() - t0)
    return out


def _check_target(out: Path) -> None:
    """Refuse anything at out that is neither absent, an empty directory, nor a bundle."""
    if not out.exists():
        return
    if not out.is_dir():
        raise GenofedError(f"{out}: exists and is not a directory; refusing to overwrite")
    if any(out.iterdir()) and not _is_bundle(out):
        raise GenofedError(f"{out}: non-empty directory that is not a bundle; "
                           "refusing to overwrite")


def _is_bundle(path: Path) -> bool:
    try:
        raw = json.loads((path / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def _replace(tmp: Path, out: Path) -> None:
    """Move tmp to out, replacing an empty directory or an old bundle there."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('.', 1)[-1]}")
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)
