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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nacl.signing import SigningKey

from genofed.agent.encode import encode_dosages
from genofed.errors import LocalInputError
from genofed.export.dpsgd_export import export_dpsgd_step
from genofed.export.ort_artifacts import export_ort_training, ort_training_available
from genofed.export.quantize import export_int8
from genofed.export.stepgraph import export_eval, export_forward, export_step, param_specs
from genofed.models.manifest import (
    FORMAT,
    MANIFEST,
    OPTIMIZERS,
    ParamSpec,
    graph_json,
    sha256_file,
)
from genofed.models.panel import Panel, load_panel
from genofed.models.signing import sign_manifest
from genofed.models.zoo import build_model, model_config

log = logging.getLogger(__name__)

INPUT_ENCODING = {"kind": "standardized_dosage", "missing": "2p"}
LOSS = "bce_with_logits_mean"
INIT_FILE = "init.npz"
MASK_FILE = "mask.npz"
PANEL_FILE = "panel.tsv"
REFERENCE_FILE = "reference.npz"


def _reference(dosage: np.ndarray, ancestry: Sequence[str] | None,
               panel: Panel) -> dict[str, np.ndarray]:
    d = np.asarray(dosage, dtype=np.float32)
    if d.ndim != 2 or d.shape[1] != len(panel) or d.shape[0] < 1:
        raise LocalInputError(f"export: reference dosages must be [n, {len(panel)}], got "
                              f"{list(d.shape)}")
    ok = np.isnan(d) | ((d >= 0) & (d <= 2))
    if not ok.all():
        raise LocalInputError("export: reference dosages must lie in [0, 2] or be NaN")
    out = {"dosage": d}
    if ancestry is not None:
        if len(ancestry) != d.shape[0]:
            raise LocalInputError(f"export: {len(ancestry)} reference ancestries for "
                                  f"{d.shape[0]} genomes")
        out["ancestry"] = np.array([str(a) for a in ancestry], dtype=np.str_)
    return out


def export_bundle(model: str, panel: Path | Panel, out: Path, *, hidden: int = 32,
                  seed: int = 0, channels: int = 4, kernel: int = 8, stride: int = 4,
                  optimizers: Sequence[str] = OPTIMIZERS, proximal: bool = False,
                  ort_training: bool | None = None, calibration: np.ndarray | None = None,
                  init: Mapping[str, np.ndarray] | None = None,
                  mask: Mapping[str, np.ndarray] | None = None,
                  signing_key: SigningKey | None = None, dpsgd: Sequence[str] = (),
                  reference: np.ndarray | None = None,
                  reference_ancestry: Sequence[str] | None = None) -> Path:
    """Export `model` over a panel (a Panel, or the path of its TSV) as a bundle directory.

    `init` replaces the model's seeded initial weights (a trained or pruned model), `mask`
    (0/1 per parameter, default all ones) prunes; pruned initial weights are zeroed. With
    `calibration` (standardized dosages [n, sites]) the bundle gets an INT8 inference model;
    `ort_training` None exports onnxruntime-training artifacts where that package exists;
    `signing_key` writes manifest.sig; `dpsgd` names the optimizers that get a DP-SGD step
    graph too (genofed.export.dpsgd). `reference` (dosages [n, sites], NaN missing: public
    reference genomes, never a device's) ships as reference.npz with `reference_ancestry`,
    for `genofed agent predict` to place a score among; it calibrates the INT8 model when
    `calibration` is not given.
    """
    out = Path(out)
    _check_target(out)
    panel = panel if isinstance(panel, Panel) else load_panel(panel)
    unknown = sorted((set(optimizers) | set(dpsgd)) - set(OPTIMIZERS))
    if unknown or not optimizers:
        raise LocalInputError(f"export: unknown optimizers {unknown} (want some of "
                              f"{', '.join(OPTIMIZERS)})")
    cfg = model_config(model, hidden=hidden, seed=seed, channels=channels, kernel=kernel,
                       stride=stride)
    module = build_model(model, len(panel), **cfg)
    specs = param_specs(module)
    params = module_params(module, specs)
    if init is not None:
        params = checked_params(init, specs, "init")
    masks = checked_params(mask, specs, "mask") if mask is not None else {
        s.name: np.ones(s.shape, np.float32) for s in specs}
    if any(not np.isin(m, (0.0, 1.0)).all() for m in masks.values()):
        raise LocalInputError("export: mask values must be 0 or 1")
    params = {k: (v * masks[k]).astype(np.float32) for k, v in params.items()}
    # The graphs take the weights as inputs, so `module` keeps its seeded weights for tracing
    # and the self-checks: a trained `init` can saturate the logits, where the mean BCE is
    # ~1e-10 and float32 rounds it differently in onnxruntime, and a sound graph was refused.
    if ort_training is None:
        ort_training = ort_training_available()
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a device's service user
    try:
        forward = export_forward(module, len(panel), tmp / "forward.onnx")
        evalg = export_eval(module, len(panel), tmp / "eval.onnx")
        steps = {opt: export_step(module, len(panel), tmp / f"step_{opt}.onnx", opt,
                                  proximal=proximal) for opt in OPTIMIZERS if opt in optimizers}
        dp_steps = {opt: export_dpsgd_step(module, len(panel), tmp / f"dpsgd_{opt}.onnx", opt)[0]
                    for opt in OPTIMIZERS if opt in dpsgd}
        _write_npz(tmp / INIT_FILE, params)
        _write_npz(tmp / MASK_FILE, masks)
        (tmp / PANEL_FILE).write_text(panel.to_tsv())
        graphs: dict[str, Any] = {"forward": graph_json(forward), "eval": graph_json(evalg),
                                  "steps": {k: graph_json(g) for k, g in steps.items()}}
        if dp_steps:
            graphs["dpsgd"] = {k: graph_json(g) for k, g in dp_steps.items()}
        if reference is not None:
            ref = _reference(reference, reference_ancestry, panel)
            _write_npz(tmp / REFERENCE_FILE, ref)
            if calibration is None:
                calibration = encode_dosages(ref["dosage"], panel.af)
        if calibration is not None:
            int8 = export_int8(tmp / forward.file, specs, panel.af, calibration,
                               tmp / "forward_int8.onnx")
            graphs["forward_int8"] = graph_json(int8)
        ort = export_ort_training(module, len(panel), params, masks, tmp) if ort_training \
            else None
        files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "model": model,
            "model_config": cfg,
            "panel": {"sha256": panel.sha256(), "n_sites": len(panel), "build": panel.build},
            "input_encoding": INPUT_ENCODING,
            "loss": LOSS,
            "proximal": proximal,
            "parameters": [{"name": s.name, "torch_name": s.torch_name,
                            "shape": list(s.shape), "dtype": s.dtype} for s in specs],
            "graphs": graphs,
            "init": INIT_FILE,
            "mask": MASK_FILE,
            **({"reference": REFERENCE_FILE} if reference is not None else {}),
            "files": files,
        }
        if ort is not None:
            manifest["ort_training"] = {"training_model": ort.training_model,
                                        "eval_model": ort.eval_model,
                                        "checkpoint": ort.checkpoint,
                                        "optimizers": dict(ort.optimizers),
                                        "hyper": {k: dict(v) for k, v in ort.hyper.items()}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if signing_key is not None:
            sign_manifest(tmp, signing_key)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle %s: %s over %d sites, %d parameters (%d unpruned), exported in %.1fs",
             out, model, len(panel), sum(s.size for s in specs),
             int(sum(m.sum() for m in masks.values())), time.perf_counter() - t0)
    return out


def seeded_params(model: str, n_sites: int, **config: int
                  ) -> tuple[tuple[ParamSpec, ...], dict[str, np.ndarray]]:
    """A zoo model's parameter specs and its deterministic initial weights (`model_config`)."""
    module = build_model(model, n_sites, **config)
    specs = param_specs(module)
    return specs, module_params(module, specs)


def module_params(module: torch.nn.Module, specs: Sequence[ParamSpec]) -> dict[str, np.ndarray]:
    """A module's weights as float32 arrays by ONNX name."""
    return {s.name: p.detach().numpy().astype(np.float32)
            for s, p in zip(specs, module.parameters(), strict=True)}


def checked_params(arrays: Mapping[str, np.ndarray], specs: Sequence[ParamSpec],
                   what: str) -> dict[str, np.ndarray]:
    """Float32 copies of one array per parameter, shapes checked."""
    names = {s.name for s in specs}
    if set(arrays) != names:
        raise LocalInputError(f"export: {what} has arrays {sorted(arrays)}, the model "
                              f"{sorted(names)}")
    out = {}
    for s in specs:
        a = np.asarray(arrays[s.name], dtype=np.float32)
        if a.shape != s.shape or not np.isfinite(a).all():
            raise LocalInputError(f"export: {what} {s.name} has shape {list(a.shape)}, want "
                                  f"{list(s.shape)} and finite values")
        out[s.name] = np.ascontiguousarray(a)
    return out


def _check_target(out: Path) -> None:
    """Refuse anything at out that is neither absent, an empty directory, nor a bundle."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LocalInputError(f"{out}: exists and is not a directory; refusing to overwrite")
    if any(out.iterdir()) and not _is_bundle(out):
        raise LocalInputError(f"{out}: non-empty directory that is not a bundle; "
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
