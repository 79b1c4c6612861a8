"""One chromosome window of a cohort: msprime genealogies and mutations, the sites kept, and
every individual's phased genotypes at them.

Sites are biallelic SNVs (one JC69 mutation at a position). The panel's sites are drawn from
those common (minor allele frequency >= MIN_PANEL_MAF) in the reference individuals, the other
written variants from the remaining sites at random. Frequencies come from the trees (sample
counts under each mutation), so only the kept sites are ever decoded to genotypes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from genofed.errors import LocalInputError
from genofed.sim.demography import ANCESTRIES, MUTATION_RATE, demography
from genofed.sim.genome import Window

log = logging.getLogger(__name__)

MIN_PANEL_MAF = 0.05
GROW, ATTEMPTS = 1.6, 6


@dataclass(frozen=True)
class WindowData:
    """The kept sites of one window, in position order."""

    window: Window
    positions: np.ndarray  # int64 [s], 1-based on the chromosome
    ref: tuple[str, ...]
    alt: tuple[str, ...]
    ref_af: np.ndarray  # float64 [s]: ALT frequency in the reference individuals
    panel: np.ndarray  # bool [s]: a panel site
    codes: np.ndarray  # uint8 [individuals, s]: 2 * first haplotype + second (ALT = 1)
    length: int  # bp simulated (the window's, or more if it had to grow)

    @property
    def ids(self) -> list[str]:
        c = self.window.contig
        return [f"{c}_{p}_{r}_{a}" for p, r, a in zip(self.positions, self.ref, self.alt,
                                                      strict=True)]


def dosage(codes: np.ndarray) -> np.ndarray:
    """ALT dosage (0, 1, 2) of genotype codes, ignoring the missing flag."""
    return ((codes >> 1) & 1) + (codes & 1)


def simulate_window(win: Window, ancestry: np.ndarray, reference: np.ndarray,
                    seed: int) -> WindowData:
    """Simulate `win` for individuals of the given ancestry codes; `reference` indexes the
    individuals whose frequencies choose the panel. Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    length = win.length
    for _attempt in range(ATTEMPTS):
        ts = _simulate(length, win.recombination_rate, ancestry, rng)
        nodes = _individual_nodes(ts, ancestry)
        chosen = _choose_sites(ts, nodes[reference].ravel(), win, rng)
        if chosen is not None:
            return _decode(win, ts, nodes, *chosen, length=length)
        log.debug("simulate: %s window of %d bp short of sites; growing", win.contig, length)
        length = int(length * GROW)
    raise LocalInputError(f"simulate: {win.contig}: could not find {win.panel} common panel "
                          f"sites and {win.variants} variants in {length} bp")


def _simulate(length: int, rate: float, ancestry: np.ndarray, rng: np.random.Generator) -> Any:
    import msprime

    counts = np.bincount(ancestry, minlength=len(ANCESTRIES))
    samples = [msprime.SampleSet(int(n), population=name, ploidy=2)
               for name, n in zip(ANCESTRIES, counts, strict=True) if n]
    ts = msprime.sim_ancestry(samples=samples, demography=demography(), sequence_length=length,
                              recombination_rate=rate, discrete_genome=True,
                              random_seed=int(rng.integers(1, 2**31 - 1)))
    return msprime.sim_mutations(ts, rate=MUTATION_RATE, model=msprime.JC69(),
                                 discrete_genome=True, random_seed=int(rng.integers(1, 2**31 - 1)))


def _individual_nodes(ts: Any, ancestry: np.ndarray) -> np.ndarray:
    """int32 [individuals, 2]: the sample nodes of each of our individuals. msprime lays out
    individuals by SampleSet, one population after another; ours get them in turn."""
    ts_nodes = ts.individuals_nodes
    counts = np.bincount(ancestry, minlength=len(ANCESTRIES))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    which = np.empty(len(ancestry), dtype=np.int64)
    for k in range(len(ANCESTRIES)):
        mine = np.flatnonzero(ancestry == k)
        which[mine] = offsets[k] + np.arange(len(mine))
    return np.asarray(ts_nodes[which], dtype=np.int32)


def _choose_sites(ts: Any, ref_nodes: np.ndarray, win: Window, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Site ids to keep (sorted), whether each is a panel site, and their reference ALT
    frequencies; None when the window is short of common or of biallelic sites."""
    site_ids, ref_count = [], []
    for tree in ts.trees(tracked_samples=ref_nodes.tolist()):
        for site in tree.sites():
            if len(site.mutations) == 1:
                site_ids.append(site.id)
                ref_count.append(tree.num_tracked_samples(site.mutations[0].node))
    ids = np.array(site_ids, dtype=np.int64)
    af = np.array(ref_count, dtype=np.float64) / max(len(ref_nodes), 1)
    common = np.flatnonzero(np.minimum(af, 1 - af) >= MIN_PANEL_MAF)
    if len(common) < win.panel or len(ids) < win.variants:
        return None
    panel = rng.choice(common, size=win.panel, replace=False)
    others = np.setdiff1d(np.arange(len(ids)), panel)
    extra = rng.choice(others, size=win.variants - win.panel, replace=False)
    keep = np.sort(np.concatenate([panel, extra]))
    return ids[keep], np.isin(keep, panel), af[keep]


def _decode(win: Window, ts: Any, nodes: np.ndarray, site_ids: np.ndarray,
            is_panel: np.ndarray, af: np.ndarray, *, length: int) -> WindowData:
    drop = np.setdiff1d(np.arange(ts.num_sites), site_ids)
    ts = ts.delete_sites(drop)
    col = np.full(ts.num_nodes, -1, dtype=np.int64)
    col[ts.samples()] = np.arange(ts.num_samples)
    c0, c1 = col[nodes[:, 0]], col[nodes[:, 1]]
    codes_t = np.empty((ts.num_sites, len(nodes)), dtype=np.uint8)
    for i, var in enumerate(ts.variants()):  # one site at a time: int32 rows stay small
        g = var.genotypes
        codes_t[i] = 2 * g[c0] + g[c1]
    codes = np.ascontiguousarray(codes_t.T)
    del codes_t
    sites = list(ts.sites())
    ref = tuple(s.ancestral_state for s in sites)
    alt = tuple(s.mutations[0].derived_state for s in sites)
    pos = ts.tables.sites.position.astype(np.int64) + win.start + 1
    return WindowData(window=win, positions=pos, ref=ref, alt=alt, ref_af=af, panel=is_panel,
                      codes=codes, length=length)
