"""Cohorts of `privacy_utility` (and the membership test): one genome a device, simulated by
`genofed simulate`'s engine (`sim/cohort.py` `build_cohort`, the default four-ancestry mix
dealt out at random), kept as panel genotype codes and cached under build/ so that a rerun
does not simulate 10^5 genomes again. Model inputs are made from the codes a batch at a time
(`agent/encode.py`: standardized by the panel's reference frequencies, missing -> 0), as a
device makes them from its VCF: the whole float matrix of 10^5 genomes is never held."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.agent.encode import encode_dosages
from genofed.models.panel import Panel, load_panel
from genofed.sim.cohort import SimParams, build_cohort
from genofed.sim.demography import ANCESTRIES

log = logging.getLogger(__name__)
CACHE = Path(__file__).resolve().parent.parent / "build" / "privacy_utility"


@dataclass(frozen=True)
class Genomes:
    """Panel genotype codes (uint8 [n, panel]: 2 * first + second haplotype, +4 missing), the
    phenotypes (int8) and the ancestry names of n genomes."""

    codes: np.ndarray
    y: np.ndarray
    ancestry: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def x(self, af: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Standardized model inputs (float32) of the given rows."""
        c = self.codes[rows]
        d = (((c >> 1) & 1) + (c & 1)).astype(np.float32)
        d[(c & 4) > 0] = np.nan
        return encode_dosages(d, af)

    def take(self, rows: np.ndarray) -> Genomes:
        return Genomes(self.codes[rows], self.y[rows], self.ancestry[rows])


@dataclass(frozen=True)
class Cohort:
    """The training genomes (each a device's), the held-out test set, and the panel."""

    panel: Panel
    train: Genomes
    test: Genomes

    @property
    def af(self) -> np.ndarray:
        return self.panel.af


def cohort(genomes: int, panel: int, variants: int, test: int, seed: int, *,
           cache: Path | None = CACHE) -> Cohort:
    """`genomes` training genomes and `test` test genomes over a `panel`-site panel, simulated
    once and then read from `cache` (None: never cached)."""
    key = dict(genomes=genomes, panel=panel, variants=variants, test=test, seed=seed)
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    if cache is not None and (cache / f"{tag}.npz").exists():
        with np.load(cache / f"{tag}.npz") as z:
            parts = {k: z[k] for k in z.files}
        return _of(load_panel(cache / f"{tag}.panel.tsv"), parts)
    log.info("simulating %d + %d genomes over %d panel sites", genomes, test, panel)
    c = build_cohort(SimParams(devices=1, samples_per_device=genomes, variants=variants,
                               panel_size=panel, seed=seed, split="iid", test_samples=test))
    parts = {"train_codes": c.devices[0].codes[:, c.panel_index],
             "train_y": c.devices[0].phenotype, "train_pop": c.devices[0].population,
             "test_codes": c.test.codes[:, c.panel_index], "test_y": c.test.phenotype,
             "test_pop": c.test.population}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{tag}.panel.tsv").write_text(c.panel.to_tsv())
        np.savez(cache / f"{tag}.tmp.npz", **parts)
        (cache / f"{tag}.tmp.npz").replace(cache / f"{tag}.npz")
    return _of(c.panel, parts)


def _of(panel: Panel, p: dict[str, np.ndarray]) -> Cohort:
    names = np.array(ANCESTRIES)
    return Cohort(panel, Genomes(p["train_codes"], p["train_y"], names[p["train_pop"]]),
                  Genomes(p["test_codes"], p["test_y"], names[p["test_pop"]]))
