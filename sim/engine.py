"""The simulation run behind `build_cohort` and `simulate`: ancestries, windows one at a time
(each handed to a sink, which keeps it in memory or writes it to disk), the trait, M_eff.

Individuals are numbered devices first (device by device), then the test set, the reference
set and the external cohort.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genofed.sim.demography import ANCESTRIES, device_ancestries, draw
from genofed.sim.genome import Window, layout
from genofed.sim.ld import li_ji_meff
from genofed.sim.params import SimParams
from genofed.sim.trait import Trait
from genofed.sim.windows import WindowData, dosage, simulate_window

log = logging.getLogger(__name__)

MEFF_SAMPLE = 2000  # genomes M_eff is measured on
CodesOf = Callable[[int, int], np.ndarray]  # (first, end) individual -> codes [n, variants]


@dataclass(frozen=True)
class Sites:
    """The written variants of a window, or of a whole cohort (windows concatenated)."""

    contigs: tuple[str, ...]
    positions: np.ndarray  # int64, 1-based
    ref: tuple[str, ...]
    alt: tuple[str, ...]
    ref_af: np.ndarray
    panel: np.ndarray  # bool

    @property
    def ids(self) -> list[str]:
        return [f"{c}_{p}_{r}_{a}" for c, p, r, a in zip(self.contigs, self.positions, self.ref,
                                                         self.alt, strict=True)]

    @staticmethod
    def of(w: WindowData) -> Sites:
        return Sites((w.window.contig,) * len(w.positions), w.positions, w.ref, w.alt,
                     w.ref_af, w.panel)

    @staticmethod
    def concat(parts: list[Sites]) -> Sites:
        return Sites(tuple(c for p in parts for c in p.contigs),
                     np.concatenate([p.positions for p in parts]),
                     tuple(r for p in parts for r in p.ref), tuple(a for p in parts for a in p.alt),
                     np.concatenate([p.ref_af for p in parts]),
                     np.concatenate([p.panel for p in parts]))


@dataclass(frozen=True)
class RunResult:
    """What a run produced besides the genotypes the sink kept."""

    ancestry: np.ndarray  # int8 [individuals]
    sites: Sites
    causal: np.ndarray  # int64 rows of `sites`
    effects: np.ndarray  # [causal, ancestries]
    phenotype: np.ndarray  # int8 [individuals] (reference individuals: meaningless)
    liability: np.ndarray
    genetic: np.ndarray
    meff: float
    windows: tuple[Window, ...]
    window_lengths: tuple[int, ...]
    external_panel: np.ndarray  # uint8 [external, panel] genotype codes, no missing


def ancestries(p: SimParams, rng: np.random.Generator) -> np.ndarray:
    """Ancestry code of every individual, in the run's order."""
    parts = device_ancestries(p.devices, p.samples_per_device, p.ancestry, p.split, rng)
    parts.append(draw(p.test_samples, p.ancestry, rng))
    parts.append(draw(p.reference_samples, p.ancestry, rng))
    k = ANCESTRIES.index(p.external_ancestry)
    parts.append(np.full(p.external_samples, k, dtype=np.int8))
    return np.concatenate(parts).astype(np.int8)


def run(p: SimParams, sink: Callable[[int, WindowData], None]) -> RunResult:
    """Simulate every window in turn, calling `sink(i, window)` once each; deterministic."""
    rng = np.random.default_rng(p.seed)
    anc = ancestries(p, rng)
    n_phe = p.n_phenotyped
    reference = np.arange(n_phe, n_phe + p.reference_samples)
    external = np.arange(n_phe + p.reference_samples, len(anc))
    meff_rows = np.sort(rng.choice(n_phe, size=min(n_phe, MEFF_SAMPLE), replace=False))
    windows = layout(p.chromosomes, p.panel_size, p.variants, p.n_causal, p.site_spacing)
    trait = Trait(anc, p.genetic_correlation, int(rng.integers(2**63)))
    seeds = rng.integers(1, 2**63, size=len(windows))
    sites, causal, lengths, ext = [], [], [], []
    offset, meff = 0, 0.0
    for i, (win, seed) in enumerate(zip(windows, seeds, strict=True)):
        w = simulate_window(win, anc, reference, int(seed))
        wrng = np.random.default_rng(int(seed) + 1)
        cols = np.flatnonzero(w.panel)
        mine = np.sort(wrng.choice(cols, size=win.causal, replace=False))
        trait.add(w.codes[:, mine], w.ref_af[mine])
        meff += li_ji_meff(dosage(w.codes[np.ix_(meff_rows, cols)]))
        ext.append(w.codes[np.ix_(external, cols)])
        if p.missing_rate > 0:
            _set_missing(w.codes[:n_phe].reshape(-1), p.missing_rate, wrng)
        sites.append(Sites.of(w))
        causal.append(mine + offset)
        lengths.append(w.length)
        offset += len(w.positions)
        sink(i, w)
        log.info("simulate: %s done (%d bp, %d variants)", win.contig, w.length,
                 len(w.positions))
    labels, liability, genetic = trait.phenotypes(np.arange(n_phe), p.heritability,
                                                  p.prevalence)
    return RunResult(ancestry=anc, sites=Sites.concat(sites), causal=np.concatenate(causal),
                     effects=np.concatenate(trait.effects), phenotype=labels,
                     liability=liability, genetic=genetic, meff=meff, windows=windows,
                     window_lengths=tuple(lengths), external_panel=np.concatenate(ext, axis=1))


def _set_missing(flat: np.ndarray, rate: float, rng: np.random.Generator) -> None:
    """Flag a Binomial(size, rate) number of random genotypes missing, in place. Positions are
    drawn as indices (repeats merge, a negligible loss at these rates): a uniform draw per
    genotype took 8 bytes each, 840 MB a window at 10^5 genomes, the run's peak memory."""
    k = int(rng.binomial(flat.size, rate))
    flat[rng.integers(0, flat.size, size=k)] |= 4
