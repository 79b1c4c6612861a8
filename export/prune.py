"""Pruning, decided by the coordinator.

Unstructured: a global magnitude mask over the weight matrices (tensors of two or more axes;
biases are never pruned), tightened along a gradual schedule the coordinator steps round by
round (Zhu and Gupta 2017: s_t = s_f + (s_i - s_f) * (1 - progress)^3). Once pruned, a weight
stays pruned. The step graphs keep pruned weights exactly zero on the device.

Structured: drop whole panel sites (input columns) or hidden units of an MLP, and re-export a
smaller bundle, which makes the device's step itself cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, ParamSpec
from genofed.models.panel import Panel


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


def site_importance(model: str, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """One score per panel site: the L2 norm of the first layer's weights on it."""
    if model == "logreg":
        return np.abs(params["linear_weight"][0]).astype(np.float64)
    if model == "mlp":
        return np.linalg.norm(params["fc1_weight"], axis=0)
    raise LocalInputError(f"structured pruning: model {model} has no per-site weights to drop")


def structured(bundle: Bundle, params: Mapping[str, np.ndarray], *, sites: int | None = None,
               hidden: int | None = None) -> tuple[Panel, dict[str, np.ndarray], dict[str, Any]]:
    """The panel, weights and model options of a smaller model: the `sites` most important
    sites (panel order kept) and, for an MLP, the `hidden` units of largest |in| * |out|."""
    panel = bundle.panel()
    cfg = dict(bundle.model_config)
    p = {k: np.asarray(v, np.float32) for k, v in params.items()}
    if sites is not None:
        if not 1 <= sites <= len(panel):
            raise LocalInputError(f"structured pruning: sites must be in [1, {len(panel)}], "
                                  f"got {sites}")
        keep = np.sort(np.argsort(-site_importance(bundle.model, p), kind="stable")[:sites])
        panel = replace(panel, sites=tuple(panel.sites[i] for i in keep))
        first = "linear_weight" if bundle.model == "logreg" else "fc1_weight"
        p[first] = p[first][:, keep]
    if hidden is not None:
        if bundle.model != "mlp" or not 1 <= hidden <= int(cfg["hidden"]):
            raise LocalInputError(f"structured pruning: hidden must be in [1, "
                                  f"{cfg.get('hidden', 0)}] for an MLP, got {hidden}")
        score = np.linalg.norm(p["fc1_weight"], axis=1) * np.abs(p["fc2_weight"][0])
        units = np.sort(np.argsort(-score, kind="stable")[:hidden])
        p["fc1_weight"], p["fc1_bias"] = p["fc1_weight"][units], p["fc1_bias"][units]
        p["fc2_weight"] = p["fc2_weight"][:, units]
        cfg["hidden"] = hidden
    return panel, p, cfg


def export_structured(bundle: Bundle, params: Mapping[str, np.ndarray], out: Path, *,
                      sites: int | None = None, hidden: int | None = None,
                      **export_options: Any) -> Path:
    """Re-export a smaller bundle (fewer sites and/or hidden units) starting from params."""
    from genofed.export.bundle import export_bundle

    panel, p, cfg = structured(bundle, params, sites=sites, hidden=hidden)
    return export_bundle(bundle.model, panel, out, init=p, **cfg, **export_options)
