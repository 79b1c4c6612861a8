"""Per-site state while a VCF's records stream past, the resolution of sites no record spoke
for, and the report. Takes `Call`s, never files: vcf.py does the reading."""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed.agent import genotype as g
from genofed.agent.absence import CallableRegions, ReadDepth, ReferenceGenome, hom_ref_call
from genofed.agent.contigs import normalize_contig
from genofed.errors import LocalInputError
from genofed.models.panel import Panel

log = logging.getLogger(__name__)

# Site state, strongest last: a later record of higher state replaces what a lower one said.
S_NONE, S_MISMATCH, S_FILTERED, S_BED, S_DEPTH, S_BLOCK, S_RECORD = range(7)
EVIDENCE = {S_RECORD: "record", S_BLOCK: "ref_block", S_BED: "callable_bed",
            S_DEPTH: "bam_depth"}
# Why a site without a record stayed missing.
N_NONE, N_INDEL, N_REF_UNKNOWN, N_NOT_CALLABLE, N_LOW_DEPTH, N_ALT_READS, N_UNNORMALIZED = (
    range(7))


@dataclass(frozen=True)
class ReadOptions:
    """How strictly to read: thresholds and the evidence allowed for absent sites."""

    min_match_rate: float = 0.75
    min_gq: int = 0
    min_dp: int = 0
    min_depth: int = 10  # reads at a site, for --bam
    drop_ambiguous: bool = False
    callable_bed: Path | None = None
    bam: Path | None = None
    reference: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_match_rate <= 1.0 or math.isnan(self.min_match_rate):
            raise LocalInputError(f"min_match_rate must lie in [0, 1], got {self.min_match_rate}")
        for name in ("min_gq", "min_dp", "min_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise LocalInputError(f"{name} must be a non-negative integer, got {v!r}")


class SiteIndex:
    """Panel sites by (normalized contig, position), and sorted per contig for range queries."""

    def __init__(self, panel: Panel) -> None:
        self.at: dict[tuple[str, int], list[int]] = {}
        by_contig: dict[str, list[tuple[int, int]]] = {}
        for j, s in enumerate(panel.sites):
            norm = normalize_contig(s.chrom)
            self.at.setdefault((norm, s.pos), []).append(j)
            by_contig.setdefault(norm, []).append((s.pos, j))
        self._pos: dict[str, list[int]] = {}
        self._idx: dict[str, list[int]] = {}
        for norm, pairs in by_contig.items():
            pairs.sort()
            self._pos[norm] = [p for p, _ in pairs]
            self._idx[norm] = [j for _, j in pairs]

    def contigs(self) -> list[str]:
        """Normalized contig names that hold panel sites."""
        return list(self._pos)

    def positions(self, norm: str) -> list[int]:
        """Sorted positions of the panel's sites on a normalized contig."""
        return self._pos.get(norm, [])

    def within(self, norm: str, start: int, stop: int) -> list[int]:
        """Site indices with start <= pos <= stop (1-based, inclusive)."""
        pos = self._pos.get(norm)
        if not pos:
            return []
        lo, hi = bisect.bisect_left(pos, start), bisect.bisect_right(pos, stop)
        return self._idx[norm][lo:hi]


class Extraction:
    """Dosages, per-genotype reasons and per-site state for one file and one panel."""

    def __init__(self, panel: Panel, n_samples: int, opts: ReadOptions,
                 reference: ReferenceGenome | None = None) -> None:
        self.panel = panel
        self.reference = reference
        self.sites = panel.sites
        self.opts = opts
        n = len(panel)
        self.index = SiteIndex(panel)
        self.dosage = np.full((n_samples, n), np.nan, dtype=np.float32)
        self.ploidy = np.zeros((n_samples, n), dtype=np.int8)
        self.gcode = np.zeros((n_samples, n), dtype=np.int8)
        self.state = np.zeros(n, dtype=np.int8)
        self.kind = np.zeros(n, dtype=np.int8)
        self.note = np.zeros(n, dtype=np.int8)
        self.indel = np.array([not g.is_snv(s.ref, s.alt) for s in panel.sites])
        self.ambiguous = np.array([g.is_ambiguous(s.ref, s.alt) for s in panel.sites])
        self.dropped = self.ambiguous if opts.drop_ambiguous else np.zeros(n, dtype=bool)
        self.best = np.zeros(n, dtype=np.int8)  # best allele match of a record so far
        self.duplicates = 0
        self.unnormalized_records = 0
        self.blocks_seen = 0
        self.panel_unnormalized = sum(not g.is_parsimonious((s.ref, s.alt))
                                      for s in panel.sites)

    def add_record(self, call: g.Call, hits: list[int]) -> None:
        """Use a record for the panel sites at its position. Where several records share a
        position (split multi-allelics: T>TA then TA>T), the better match wins in pgsc_calc's
        order (same, swapped, flipped, flipped and swapped), whatever the record order [17]."""
        parsimonious = g.is_parsimonious(call.alleles)
        if not parsimonious:
            self.unnormalized_records += 1
        kind = g.filter_kind(call.filters)
        for j in hits:
            if self.dropped[j]:
                continue
            s = self.sites[j]
            m = g.match_alleles(s.ref, s.alt, call.alleles)
            if m is None:
                if self.state[j] < S_MISMATCH:
                    self.state[j] = S_MISMATCH
                    self.note[j] = N_NONE if parsimonious else N_UNNORMALIZED
                continue
            best = self.best[j]
            if best and m.kind >= best:  # a record matched as well or better already
                self.duplicates += 1
                continue
            if best:  # this record matches better than the one used: it decides instead
                self.duplicates += 1
                self._clear(j)
            self.best[j] = m.kind
            if kind == g.FAIL:
                if self.state[j] == S_BLOCK:  # a failed call contradicts the block: unsure
                    self._clear(j)
                self.state[j] = max(self.state[j], S_FILTERED)
                continue
            self.kind[j] = m.kind
            self.state[j] = S_RECORD
            self._genotypes(j, call, m, refcall=kind == g.REFCALL)

    def add_block(self, call: g.Call, sites: list[int]) -> None:
        """Use a reference block (or a hom-ref record spanning several bases) for the SNV
        panel sites inside it, after its first base [9, 10]."""
        self.blocks_seen += 1
        if g.filter_kind(call.filters) == g.FAIL:
            return
        for j in sites:
            if self.state[j] >= S_BLOCK or self.dropped[j]:
                continue
            if self.indel[j]:
                self.note[j] = N_INDEL  # a run of 0/0 SNV blocks says nothing of an indel
                continue
            m = self._span_match(j, call)
            if m is None:
                continue
            self.kind[j] = m.kind
            self.state[j] = S_BLOCK
            self._genotypes(j, call, m, refcall=False)

    def resolve_absent(self, bed: CallableRegions | None, depth: ReadDepth | None) -> None:
        """Sites no record or block spoke for: a callable region, else enough reads, gives a
        0/0 call; otherwise they stay missing [8]."""
        todo = np.flatnonzero((self.state == S_NONE) & ~self.dropped)
        if (bed is None and depth is None) or not len(todo):
            return
        for j in map(int, todo):
            if self.indel[j]:
                self.note[j] = N_INDEL
                continue
            s = self.sites[j]
            if bed is not None:
                if bed.covers(s.chrom, s.pos):
                    self._hom_ref(j, S_BED)
                    continue
                self.note[j] = N_NOT_CALLABLE
            if depth is not None:
                p = depth.pileup(s.chrom, s.pos, s.ref, s.alt)
                if hom_ref_call(p, self.opts.min_depth):
                    self._hom_ref(j, S_DEPTH)
                else:
                    self.note[j] = N_LOW_DEPTH if p.depth < self.opts.min_depth else N_ALT_READS

    def _span_match(self, j: int, call: g.Call) -> g.Match | None:
        """Orientation of site j inside a hom-ref span: a REF written out base by base (an
        `ALT=.` record over several bases) is checked against the panel's alleles like any
        record's REF [11]; a one-base block REF says nothing of the bases after it."""
        ref = call.alleles[0]
        offset = self.sites[j].pos - call.pos
        if len(ref) <= offset or len(ref) < 2:
            return self._reference_match(j)
        s, base = self.sites[j], ref[offset]
        if base == s.ref:
            return g.Match(g.SAME, None)
        if base == s.alt:
            return g.Match(g.SWAPPED, 0)
        if self.state[j] < S_MISMATCH:
            self.state[j] = S_MISMATCH
            self.note[j] = N_NONE
        return None

    def _reference_match(self, j: int) -> g.Match | None:
        """Orientation of a hom-ref call at site j: SAME when the panel's ref is the genome's."""
        if self.panel.ref_is_reference:
            return g.Match(g.SAME, None)
        ref = self.reference
        s = self.sites[j]
        if ref is None:
            self.note[j] = N_REF_UNKNOWN
            return None
        base = ref.bases(s.chrom, s.pos, 1)
        if base == s.ref:
            return g.Match(g.SAME, None)
        if base == s.alt:
            return g.Match(g.SWAPPED, 0)
        self.note[j] = N_REF_UNKNOWN
        return None

    def _clear(self, j: int) -> None:
        self.kind[j] = 0
        self.dosage[:, j] = np.nan
        self.ploidy[:, j] = 0
        self.gcode[:, j] = g.G_OK
        self.state[j] = S_NONE

    def _hom_ref(self, j: int, state: int) -> None:
        m = self._reference_match(j)
        if m is None:
            return
        self.kind[j] = m.kind
        self.state[j] = state
        self.dosage[:, j] = 2.0 if m.target == 0 else 0.0
        self.ploidy[:, j] = 2
        self.gcode[:, j] = g.G_OK

    def _genotypes(self, j: int, call: g.Call, m: g.Match, *, refcall: bool) -> None:
        min_gq, min_dp = self.opts.min_gq, self.opts.min_dp
        for i, gt in enumerate(call.gts):
            if refcall:
                gt = g.reference_call(gt)
            d, ploidy, reason = g.count_copies(gt, m.target, m.unknown)
            if reason == g.G_OK and call.ft and call.ft[i]:
                d, reason = math.nan, g.G_FILTERED  # FORMAT/FT fails, as FILTER would [21]
            if reason == g.G_OK:
                reason = g.quality_reason(call.gq[i], call.dp[i], min_gq, min_dp)
                if reason != g.G_OK:
                    d = math.nan
            self.dosage[i, j] = d
            self.ploidy[i, j] = ploidy
            self.gcode[i, j] = reason

    def report(self, **extra: Any) -> dict[str, Any]:
        """Counts per kind and per missing reason [19]; `extra` is merged in."""
        from genofed.agent.report import extraction_report

        return extraction_report(self, **extra)
