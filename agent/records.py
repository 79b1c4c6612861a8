"""pysam records into `genotype.Call`s, only those near panel sites: the reader's hot loop.

Kept apart from vcf.py (opening, planning, the report) because it is the part that runs once
per record. It reads what htslib reads: contigs the header never declared (older public
releases have no `##contig` lines, and htslib adds them as it meets them), GT wherever FORMAT
puts it, and per-sample FORMAT/FT filters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pysam

from genofed.agent import genotype
from genofed.agent.contigs import normalize_contig
from genofed.agent.extract import Extraction
from genofed.errors import LocalInputError
from genofed.models.builds import CONTIG_LENGTHS

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
Runs = Iterator[tuple[Iterator[Any], int]]
_PROGRESS_EVERY = 8192  # records between progress callbacks
_NO_SITES: tuple[str, dict[int, list[int]], int] = ("", {}, 0)


class RecordReader:
    """Streams pysam records into an Extraction, converting only those near panel sites."""

    def __init__(self, path: Path, vf: pysam.VariantFile, ex: Extraction) -> None:
        self.path, self.vf, self.ex = path, vf, ex
        self.last = ""
        self.gt_elsewhere = 0  # records whose GT was not the first FORMAT key
        # Per contig (the file's name), the largest position met past the panel build's end.
        self.past_end: dict[str, int] = {}
        self._lengths = CONTIG_LENGTHS.get(ex.panel.build, {})
        # Per header contig id: (normalized name, {pos: panel site indices}, build length).
        self.by_rid: list[tuple[str, dict[int, list[int]], int]] = []
        self._grow()
        fmt, info = vf.header.formats, vf.header.info
        single = len(vf.header.samples) == 1
        self.has_gq = "GQ" in fmt
        self.has_dp = "DP" in fmt
        self.has_min_dp = "MIN_DP" in fmt
        self.has_ft = "FT" in fmt
        self.info_dp = single and "DP" in info  # medaka: depth in INFO/DP [13]
        self.info_min_dp = single and "MinDP" in info  # bcftools call -g blocks
        # Records spanning several bases matter only as reference blocks, which need END.
        self.spans = "END" in info

    def _grow(self) -> None:
        """Entries for header contigs not seen yet (htslib adds undeclared ones as it reads)."""
        contigs = list(self.vf.header.contigs.items())
        for name, contig in contigs[len(self.by_rid):]:
            norm = normalize_contig(str(name))
            hits = {p: self.ex.index.at[(norm, p)] for p in self.ex.index.positions(norm)}
            self.by_rid.append((norm, hits, self._lengths.get(norm, 0)) if hits or
                               norm in self._lengths else _NO_SITES)
            assert contig.id == len(self.by_rid) - 1

    def stream(self) -> Runs:
        """Every record, once, as one run (nothing was read from this handle before)."""
        yield iter(self.vf), 0

    def regions(self, regions: tuple[tuple[str, int, int], ...]) -> Runs:
        """The records overlapping each region, with the region's start."""
        for name, start, stop in regions:
            yield self.vf.fetch(name, start - 1, stop), start

    def run(self, runs: Runs, mode: str, total: int, progress: Progress | None) -> None:
        """Feed every record near a panel site to the Extraction."""
        ex, within, spans = self.ex, self.ex.index.within, self.spans
        by_rid = self.by_rid
        n_rid = len(by_rid)
        for n_run, (records, start) in enumerate(runs, 1):
            while True:
                chunk = 0
                for rec in islice(records, _PROGRESS_EVERY):
                    chunk += 1
                    rid = rec.rid
                    if rid >= n_rid:
                        self._grow()
                        n_rid = len(by_rid)
                    norm, sites, length = by_rid[rid]
                    pos = rec.pos
                    if pos > length and length:  # evidence of another build [4]
                        chrom = str(rec.chrom)
                        if pos > self.past_end.get(chrom, 0):
                            self.past_end[chrom] = pos
                    hits = sites.get(pos)
                    if hits is not None and pos < start:
                        hits = None  # met in the previous region already
                    inside = None
                    if spans:
                        rlen = rec.rlen
                        if rlen > 1:
                            inside = within(norm, pos + 1, pos + rlen - 1)
                    if hits is None and not inside:
                        continue
                    self.last = f"{rec.chrom}:{pos}"
                    call = self._call(rec, block=bool(inside))
                    if hits is not None:
                        ex.add_record(call, hits)
                    if inside and genotype.is_reference_only(call.alleles):
                        ex.add_block(call, inside)
                if progress is not None and (chunk or mode == "region"):
                    progress(min(1.0, self._done(n_run, mode) / total))
                if chunk < _PROGRESS_EVERY:
                    break
        if progress is not None:
            progress(1.0)

    def _done(self, n_run: int, mode: str) -> int:
        """Regions read, or compressed bytes read (0 where a pipe cannot say)."""
        if mode == "region":
            return n_run
        try:
            return int(self.vf.tell()) >> 16
        except (NotImplementedError, OSError):
            return 0

    def _call(self, rec: Any, *, block: bool) -> genotype.Call:
        """A pysam record as a Call: alleles, filters, GT, FT, GQ and depth per sample."""
        keys = rec.format.keys()
        samples = list(rec.samples.values())
        if keys and keys[0] != "GT" and "GT" in keys:
            # htslib-based readers give no genotype unless GT comes first [22]
            self.gt_elsewhere += 1
            gts = _genotypes_from_text(self.path, rec, keys.index("GT"))
        else:
            gts = tuple(s.allele_indices for s in samples)
        gq_key = "GQ" if self.has_gq and "GQ" in keys else None
        dp_key = ("MIN_DP" if block and self.has_min_dp and "MIN_DP" in keys else
                  "DP" if self.has_dp and "DP" in keys else None)
        info_dp: int | None = None
        if dp_key is None:
            key = "MinDP" if block and self.info_min_dp else "DP" if self.info_dp else None
            if key is not None:
                info_dp = _int(rec.info.get(key))
        n = len(samples)
        ft = (tuple(genotype.genotype_filter_fails(s.get("FT")) for s in samples)
              if self.has_ft and "FT" in keys else ())
        return genotype.Call(
            contig=rec.chrom, pos=rec.pos, stop=rec.stop,
            alleles=tuple(a.upper() for a in rec.alleles),
            filters=tuple(rec.filter.keys()),
            gts=gts,
            gq=tuple(_int(s.get(gq_key)) for s in samples) if gq_key else (None,) * n,
            dp=(tuple(_int(s.get(dp_key)) for s in samples) if dp_key else (info_dp,) * n),
            ft=ft)


def _genotypes_from_text(path: Path, rec: Any, at: int) -> tuple[genotype.Genotype, ...]:
    """GT of every sample from the record's text, GT being FORMAT key number `at`."""
    fields = str(rec).rstrip("\n").split("\t")
    n_alleles = len(rec.alleles)
    gts = []
    for column in fields[9:]:
        values = column.split(":")
        text = values[at] if at < len(values) else "."
        alleles: list[int | None] = []
        for a in text.replace("|", "/").split("/"):
            if a == ".":
                alleles.append(None)
                continue
            if not a.isdigit() or int(a) >= n_alleles:
                raise LocalInputError(f"{path}:{rec.chrom}:{rec.pos}: cannot read GT {text!r} "
                                      f"(FORMAT key {at + 1}, GT not first)")
            alleles.append(int(a))
        gts.append(tuple(alleles))
    return tuple(gts)


def _int(v: Any) -> int | None:
    """An integer FORMAT/INFO value (the first of a tuple), None if missing."""
    if isinstance(v, tuple):
        v = v[0] if v else None
    return None if v is None else int(v)
