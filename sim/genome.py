"""Where a simulated cohort's sites lie: one window on each chosen autosome of GRCh38.

Whole chromosomes of 10^5 genomes cost too much here (msprime alone takes about 7 s per Mb
at that size, and 2.9 Gb would hold ~10^8 segregating sites), so each chromosome is
simulated as one window with its own mean recombination rate, and every window is an
independent coalescent simulation: that is what unlinked chromosomes are. A window's length is
its share of the panel times `site_spacing` base pairs, so a larger panel covers more genome
rather than packing the same windows denser: the effective number of independent markers
then grows with the panel, as it does for a real genome-wide panel.

Chromosome lengths are GRCh38's (`agent/contigs.py`); mean recombination rates per
chromosome are stdpopsim's HomSap catalogue (HapMap II genetic map means, per bp per
generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genofed.agent.contigs import CONTIG_LENGTHS
from genofed.errors import LocalInputError

BUILD = "GRCh38"
AUTOSOMES = tuple(range(1, 23))
RECOMBINATION_RATE = {
    1: 1.1523470111585671e-08, 2: 1.1042947599187705e-08, 3: 1.1258496243179589e-08,
    4: 1.148200397734684e-08, 5: 1.1244324085272748e-08, 6: 1.1265873463291707e-08,
    7: 1.177126324439884e-08, 8: 1.1604882118427952e-08, 9: 1.219866363355389e-08,
    10: 1.3333710355319759e-08, 11: 1.1721276661036567e-08, 12: 1.3098075878935492e-08,
    13: 1.3061005794618377e-08, 14: 1.3629801391728677e-08, 15: 1.738760443308643e-08,
    16: 1.4831470988338458e-08, 17: 1.55382549450431e-08, 18: 1.4645528336185072e-08,
    19: 1.8384797447801312e-08, 20: 1.6788552013988714e-08, 21: 1.724434082825555e-08,
    22: 2.1057233894035443e-08,
}
SITE_SPACING = 2_000  # bp of simulated sequence per panel site (about 1 in 4 common sites)
MIN_WINDOW = 20_000


def contig_name(chrom: int) -> str:
    return f"chr{chrom}"


def contig_length(chrom: int) -> int:
    return CONTIG_LENGTHS[BUILD][str(chrom)]


@dataclass(frozen=True)
class Window:
    """One chromosome's simulated stretch and what it must yield."""

    chrom: int
    start: int  # 0-based offset of the window on the chromosome
    length: int  # bp simulated
    panel: int  # panel sites to draw here
    variants: int  # variants written here (panel sites included)
    causal: int  # causal sites among the panel sites here

    @property
    def contig(self) -> str:
        return contig_name(self.chrom)

    @property
    def recombination_rate(self) -> float:
        return RECOMBINATION_RATE[self.chrom]


def check_chromosomes(chromosomes: tuple[int, ...]) -> tuple[int, ...]:
    if not chromosomes or any(c not in AUTOSOMES for c in chromosomes) or \
            len(set(chromosomes)) != len(chromosomes):
        raise LocalInputError(f"simulate: chromosomes {chromosomes!r}: want distinct autosomes "
                              f"1..22")
    return tuple(sorted(chromosomes))


def parse_chromosomes(text: str) -> tuple[int, ...]:
    """`1-22`, `20,21,22` or `all`."""
    if text.strip().lower() in ("all", "autosomes"):
        return AUTOSOMES
    out: list[int] = []
    try:
        for part in filter(None, (p.strip().removeprefix("chr") for p in text.split(","))):
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise LocalInputError(f"simulate: --chromosomes {text!r}: want e.g. 1-22 or 20,21,22"
                              ) from None
    return check_chromosomes(tuple(out))


def split_counts(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` split in proportion to `weights`, largest remainder (sums to `total`)."""
    want = weights / weights.sum() * total
    counts = np.floor(want).astype(np.int64)
    order = np.argsort(-(want - counts), kind="stable")
    counts[order[:total - counts.sum()]] += 1
    return counts


def layout(chromosomes: tuple[int, ...], panel_size: int, variants: int, n_causal: int,
           site_spacing: int = SITE_SPACING) -> tuple[Window, ...]:
    """Windows in chromosome order; the panel shared in proportion to chromosome length."""
    chroms = check_chromosomes(chromosomes)
    lengths = np.array([contig_length(c) for c in chroms], dtype=np.float64)
    panel = split_counts(panel_size, lengths)
    var = panel + split_counts(variants - panel_size, lengths)
    causal = split_counts(n_causal, np.maximum(panel, 1e-9).astype(np.float64))
    causal = np.minimum(causal, panel)
    short = n_causal - int(causal.sum())
    for i in np.argsort(-(panel - causal), kind="stable")[:short]:  # rarely: top up elsewhere
        causal[i] += 1
    wins = []
    for c, L, p, v, k in zip(chroms, lengths, panel, var, causal, strict=True):
        size = int(max(MIN_WINDOW, p * site_spacing))
        start = int(L) // 3  # a third of the way along: clear of telomeres, past most p arms
        if start + size >= L:
            raise LocalInputError(f"simulate: {p} panel sites at {site_spacing} bp spacing do "
                                  f"not fit on chr{c}; use more chromosomes")
        wins.append(Window(chrom=c, start=start, length=size, panel=int(p), variants=int(v),
                           causal=int(k)))
    return tuple(wins)
