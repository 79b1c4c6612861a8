"""What `genofed export` is asked, checked before anything is exported.

The model and panel, the weights to start from (`--init`: named arrays, as `genofed train -o`
and `genofed aggregator model` write them), and how to prune (`export/prune.py`): to a
sparsity, or to step T of N of the cubic schedule, keeping an earlier bundle's mask, cutting
sites or hidden units. Every value is checked when the request is built, and every error is
one LocalInputError naming the flag.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed.errors import LocalInputError
from genofed.export.prune import GradualSchedule, export_pruned, summary
from genofed.models.manifest import OPTIMIZERS, Bundle, load_bundle
from genofed.models.panel import Panel, load_panel


@dataclass(frozen=True)
class ExportRequest:
    """One `genofed export`: the CLI's flags, checked."""

    model: str
    panel: Path
    out: Path
    hidden: int = 32
    seed: int = 0
    proximal: bool = False
    init: Path | None = None
    prune: float | None = None
    prune_step: int | None = None
    prune_steps: int | None = None
    mask_from: Path | None = None
    keep_sites: int | None = None
    keep_hidden: int | None = None
    init_from: Path | None = None  # a PGS Catalog scoring file (`export/score_init.py`)
    dpsgd: bool = False  # a DP-SGD step graph beside each optimizer's step (export/dpsgd.py)

    def __post_init__(self) -> None:
        stepped = (self.prune_step is not None, self.prune_steps is not None)
        if any(stepped) and not all(stepped):
            raise LocalInputError("export: --prune-step and --prune-steps go together")
        if any(stepped) and self.prune is None:
            raise LocalInputError("export: --prune-step needs --prune, the schedule's final "
                                  "sparsity")
        if self.prune is not None and not 0.0 <= self.prune < 1.0:
            raise LocalInputError(f"export: --prune must be a fraction in [0, 1), got "
                                  f"{self.prune}")
        if all(stepped) and (self.prune_steps < 1 or self.prune_step < 0):  # type: ignore[operator]
            raise LocalInputError(f"export: --prune-steps must be >= 1 and --prune-step >= 0, "
                                  f"got {self.prune_steps} and {self.prune_step}")
        if self.keep_hidden is not None:
            if self.model != "mlp":
                raise LocalInputError(f"export: --keep-hidden works for mlp, not {self.model}")
            if not 1 <= self.keep_hidden <= self.hidden:
                raise LocalInputError(f"export: --keep-hidden must be in [1, {self.hidden}] "
                                      f"(--hidden), got {self.keep_hidden}")
        if self.keep_sites is not None and self.model == "cnn":
            raise LocalInputError("export: --keep-sites works for logreg and mlp, not cnn")
        if self.init is not None and self.init_from is not None:
            raise LocalInputError("export: --init and --init-from each give the starting "
                                  "weights; pass one")
        if self.init is None and self.init_from is None and self.model == "logreg" and (
                self.sparsity or self.keep_sites):
            flag = "--prune" if self.sparsity else "--keep-sites"
            raise LocalInputError(f"export: {flag} needs --init for a logreg (its initial "
                                  "weights are all 0, so there is no magnitude to rank)")

    @property
    def sparsity(self) -> float:
        """What the weight matrices are pruned to: --prune, or the schedule's at the step."""
        if self.prune is None:
            return 0.0
        if self.prune_step is None or self.prune_steps is None:
            return float(self.prune)
        return GradualSchedule(final=self.prune, end=self.prune_steps).sparsity(self.prune_step)

    def run(self, **export_options: Any) -> tuple[Path, str]:
        """Export the bundle; returns its path and one line saying what it holds."""
        panel = load_panel(self.panel)
        if self.keep_sites is not None and not 1 <= self.keep_sites <= len(panel):
            raise LocalInputError(f"export: --keep-sites must be in [1, {len(panel)}] (the "
                                  f"panel's sites), got {self.keep_sites}")
        init = read_params(self.init, "--init") if self.init is not None else None
        from_score = ""
        if self.init_from is not None:
            from genofed.export.score_init import params_from_score
            from genofed.models.pgs import load_pgs

            init, counts = params_from_score(self.model, panel, load_pgs(self.init_from))
            from_score = (f"; weights from {self.init_from.name}: "
                          f"{counts['same'] + counts['swapped']} sites matched "
                          f"({counts['swapped']} swapped), {counts['not_on_panel']} not on the "
                          f"panel, {counts['other_alleles']} with other alleles")
        out = export_pruned(self.model, panel, self.out, hidden=self.hidden, seed=self.seed,
                            init=init, earlier=self._earlier(panel), sparsity=self.sparsity,
                            keep_sites=self.keep_sites, keep_hidden=self.keep_hidden,
                            proximal=self.proximal, dpsgd=OPTIMIZERS if self.dpsgd else (),
                            **export_options)
        target = ""
        if self.prune is not None:
            target = f" (target {self.sparsity:.2%}" + (
                f", step {self.prune_step} of {self.prune_steps})"
                if self.prune_step is not None else ")")
        return out, f"bundle written to {out}: {summary(load_bundle(out))}{target}{from_score}"

    def _earlier(self, panel: Panel) -> Bundle | None:
        if self.mask_from is None:
            return None
        try:
            earlier = load_bundle(self.mask_from)
        except LocalInputError as exc:
            raise LocalInputError(f"--mask-from: {exc}") from None
        if earlier.model != self.model or earlier.panel_sha256 != panel.sha256():
            where = "this" if earlier.panel_sha256 == panel.sha256() else "another"
            raise LocalInputError(f"export: --mask-from {self.mask_from} is a bundle of "
                                  f"{earlier.model} over {where} panel, not of {self.model} "
                                  f"over {self.panel}")
        return earlier


def read_params(path: Path, flag: str) -> dict[str, np.ndarray]:
    """Named number arrays from an .npz; errors name the flag and the file."""
    if not path.is_file():
        raise LocalInputError(f"{flag} {path}: not found")
    if not zipfile.is_zipfile(path):
        raise LocalInputError(f"{flag} {path}: not an .npz of named arrays")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise LocalInputError(f"{flag} {path}: cannot read: {exc}") from None
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise LocalInputError(f"{flag} {path}: array {name} holds {a.dtype}, not numbers")
    return arrays
