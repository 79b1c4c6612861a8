"""Pruning, decided by the coordinator, reached through `genofed export` (`export_pruned`).

Unstructured: a global magnitude mask over the weight matrices (tensors of two or more axes;
biases are never pruned). Once pruned, a weight stays pruned: a re-export keeps an earlier
bundle's mask. The coordinator tightens the mask along the gradual schedule of Zhu and Gupta
2017 (s_t = s_f + (s_i - s_f) * (1 - t / n)^3) by re-exporting at step t of n. The step graphs
keep pruned weights exactly zero on the device, and updates carry only unpruned coordinates.

Structured: drop whole panel sites (input columns) or hidden units of an MLP, and re-export a
smaller bundle, which makes the device's step itself cheaper.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, ParamSpec
from genofed.models.panel import Panel

log = logging.getLogger(__name__)


def prunable(spec: ParamSpec) -> bool:
    """Whether magnitude pruning applies to this tensor (weight matrices, not biases)."""
    return len(spec.shape) >= 2


def magnitude_mask(params: Mapping[str, np.ndarray], specs: Sequence[ParamSpec],
                   sparsity: float, *,
                   current: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A global mask pruning the `sparsity` fraction of prunable weights smallest in |w|.

    Weights already pruned in `current` stay pruned (they count towards the fraction).
    """
    if not 0.0 <= sparsity < 1.0:
        raise LocalInputError(f"pruning: sparsity must be in [0, 1), got {sparsity}")
    cur = {s.name: (np.ones(s.shape, np.float32) if current is None
                    else np.asarray(current[s.name], np.float32)) for s in specs}
    pr = [s for s in specs if prunable(s)]
    if not pr:
        return cur
    mags = np.concatenate([np.where(cur[s.name] > 0, np.abs(params[s.name]), -1.0).ravel()
                           for s in pr])
    k = round(sparsity * mags.size)
    if k > np.count_nonzero(mags < 0) and not np.any(mags > 0):
        raise LocalInputError("pruning: every unpruned weight matrix entry is 0, so magnitude "
                              "cannot rank them (prune trained weights)")
    keep = np.ones(mags.size, bool)
    if k:
        keep[np.argsort(mags, kind="stable")[:k]] = False
    keep &= mags >= 0  # never revive a pruned weight
    out = dict(cur)
    offset = 0
    for s in pr:
        out[s.name] = keep[offset:offset + s.size].reshape(s.shape).astype(np.float32)
        offset += s.size
    return out


@dataclass(frozen=True)
class GradualSchedule:
    """Sparsity from `initial` at round `begin` to `final` at round `end`, cubic in between."""

    final: float
    end: int
    begin: int = 0
    initial: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.initial <= self.final < 1.0 and 0 <= self.begin < self.end):
            raise LocalInputError(f"need 0 <= initial <= final < 1 and 0 <= begin < end, got "
                             f"{self.initial}, {self.final}, {self.begin}, {self.end}")

    def sparsity(self, round_: int) -> float:
        """The target sparsity at a round."""
        progress = min(max((round_ - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


def weight_sparsity(mask: Mapping[str, np.ndarray], specs: Sequence[ParamSpec]) -> float:
    """The pruned fraction of the weight matrices' entries (0.0 for a model without any)."""
    pr = [s for s in specs if prunable(s)]
    total = sum(s.size for s in pr)
    return sum(s.size - np.count_nonzero(mask[s.name]) for s in pr) / total if total else 0.0


@dataclass(frozen=True)
class Summary:
    """What a bundle trains: its model, sites, parameters and how many of them are pruned."""

    model: str
    sites: int
    parameters: int
    unpruned: int
    sparsity: float  # of the weight matrices

    def __str__(self) -> str:
        return (f"{self.model} over {self.sites} sites, {self.parameters} parameters, "
                f"{self.unpruned} unpruned, weight matrices {self.sparsity:.2%} pruned")


def summary(bundle: Bundle) -> Summary:
    """The bundle's Summary."""
    return Summary(bundle.model, bundle.n_sites, bundle.n_params, bundle.layout.n_trained,
                   weight_sparsity(bundle.mask(), bundle.params))


def site_importance(model: str, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """One score per panel site: the L2 norm of the first layer's weights on it."""
    if model == "logreg":
        return np.abs(params["linear_weight"][0]).astype(np.float64)
    if model == "mlp":
        return np.linalg.norm(params["fc1_weight"], axis=0)
    raise LocalInputError(f"structured pruning: model {model} has no per-site weights to drop")


@dataclass(frozen=True)
class Shrunk:
    """A smaller model's panel, weights, mask (None: no mask given) and model options."""

    panel: Panel
    params: dict[str, np.ndarray]
    mask: dict[str, np.ndarray] | None
    config: dict[str, Any]


def shrink(model: str, panel: Panel, config: Mapping[str, Any],
           params: Mapping[str, np.ndarray], *, mask: Mapping[str, np.ndarray] | None = None,
           sites: int | None = None, hidden: int | None = None) -> Shrunk:
    """Keep the `sites` most important sites (panel order kept) and, for an MLP, the `hidden`
    units of largest |in| * |out|; a mask is cut the same way as the weights."""
    cfg = dict(config)
    arrays = [{k: np.asarray(v, np.float32) for k, v in params.items()}]
    if mask is not None:
        arrays.append({k: np.asarray(v, np.float32) for k, v in mask.items()})
    p = arrays[0]
    if sites is not None:
        if not 1 <= sites <= len(panel):
            raise LocalInputError(f"structured pruning: sites must be in [1, {len(panel)}], "
                                  f"got {sites}")
        keep = np.sort(np.argsort(-site_importance(model, p), kind="stable")[:sites])
        panel = replace(panel, sites=tuple(panel.sites[i] for i in keep))
        first = "linear_weight" if model == "logreg" else "fc1_weight"
        for a in arrays:
            a[first] = a[first][:, keep]
    if hidden is not None:
        if model != "mlp" or not 1 <= hidden <= int(cfg["hidden"]):
            raise LocalInputError(f"structured pruning: hidden must be in [1, "
                                  f"{cfg.get('hidden', 0)}] for an MLP, got {hidden}")
        score = np.linalg.norm(p["fc1_weight"], axis=1) * np.abs(p["fc2_weight"][0])
        units = np.sort(np.argsort(-score, kind="stable")[:hidden])
        for a in arrays:
            a["fc1_weight"], a["fc1_bias"] = a["fc1_weight"][units], a["fc1_bias"][units]
            a["fc2_weight"] = a["fc2_weight"][:, units]
        cfg["hidden"] = hidden
    return Shrunk(panel, arrays[0], arrays[1] if mask is not None else None, cfg)


def structured(bundle: Bundle, params: Mapping[str, np.ndarray], *, sites: int | None = None,
               hidden: int | None = None) -> tuple[Panel, dict[str, np.ndarray], dict[str, Any]]:
    """The panel, weights and model options of a smaller model (`shrink` of a bundle's model)."""
    s = shrink(bundle.model, bundle.panel(), bundle.model_config, params, sites=sites,
               hidden=hidden)
    return s.panel, s.params, s.config


def export_structured(bundle: Bundle, params: Mapping[str, np.ndarray], out: Path, *,
                      sites: int | None = None, hidden: int | None = None,
                      mask: Mapping[str, np.ndarray] | None = None,
                      **export_options: Any) -> Path:
    """Re-export a smaller bundle (fewer sites and/or hidden units) starting from params; a
    mask of the bundle's shape is cut to the smaller model and stays in force."""
    from genofed.export.bundle import export_bundle

    s = shrink(bundle.model, bundle.panel(), bundle.model_config, params, mask=mask,
               sites=sites, hidden=hidden)
    return export_bundle(bundle.model, s.panel, out, init=s.params, mask=s.mask, **s.config,
                         **export_options)


def export_pruned(model: str, panel: Panel, out: Path, *, hidden: int = 32, seed: int = 0,
                  init: Mapping[str, np.ndarray] | None = None, earlier: Bundle | None = None,
                  sparsity: float = 0.0, keep_sites: int | None = None,
                  keep_hidden: int | None = None, **export_options: Any) -> Path:
    """Export `model` over `panel` from `init` (default: its seeded initial weights), pruned.

    In order: weights `earlier` (a bundle of the same model and panel) pruned are zeroed and
    stay pruned; `keep_sites` / `keep_hidden` cut the model (`shrink`); then the global
    magnitude mask prunes the weight matrices to `sparsity` (weights already pruned count).
    """
    from genofed.export.bundle import checked_params, export_bundle, seeded_params
    from genofed.models.manifest import load_bundle
    from genofed.models.zoo import model_config

    cfg: dict[str, Any] = model_config(model, hidden=hidden, seed=seed)
    specs, params = seeded_params(model, len(panel), **cfg)
    if init is not None:
        params = checked_params(init, specs, "init")
    current = None
    if earlier is not None:
        if earlier.model != model or earlier.panel_sha256 != panel.sha256():
            raise LocalInputError(f"pruning: {earlier.path} is a bundle of {earlier.model} "
                                  f"over {earlier.n_sites} sites, not of {model} over this "
                                  f"panel ({len(panel)} sites)")
        current = checked_params(earlier.mask(), specs, f"the mask of {earlier.path}")
        params = {k: v * current[k] for k, v in params.items()}
    if keep_sites is not None or keep_hidden is not None:
        cut = shrink(model, panel, cfg, params, mask=current, sites=keep_sites,
                     hidden=keep_hidden)
        panel, params, current, cfg = cut.panel, cut.params, cut.mask, cut.config
        specs, _ = seeded_params(model, len(panel), **cfg)
    mask = None
    if sparsity > 0 or current is not None:
        mask = magnitude_mask(params, specs, sparsity, current=current)
    path = export_bundle(model, panel, out, init=params, mask=mask, **cfg, **export_options)
    log.info("bundle %s: %s", path, summary(load_bundle(path)))
    return path
