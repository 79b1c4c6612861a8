"""Evidence about panel sites that have no record of their own [rules 8, 10]: the callable
regions a caller wrote (BED), read depth from the BAM/CRAM (pysam), and the reference base
(FASTA) for panels that do not say which of their alleles is the reference."""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from genofed.agent.contigs import normalize_contig, resolve
from genofed.errors import LocalInputError, read_user_text

log = logging.getLogger(__name__)

MIN_MAPQ = 20  # reads below this mapping quality are not counted
MIN_BASEQ = 0  # long-read base qualities are low; count every aligned base
MAX_ALT_FRACTION = 0.2  # more ALT reads than this and no call: not a confident hom-ref


class CallableRegions:
    """A BED of callable regions (0-based, half-open), merged per contig."""

    def __init__(self, path: Path) -> None:
        self.path = path
        starts: dict[str, list[int]] = {}
        ends: dict[str, list[int]] = {}
        intervals: dict[str, list[tuple[int, int]]] = {}
        for lineno, line in enumerate(read_user_text(path, "callable BED").splitlines(), 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.split("\t")
            try:
                start, end = int(fields[1]), int(fields[2])
            except (IndexError, ValueError):
                raise LocalInputError(f"{path}:{lineno}: expected chrom<TAB>start<TAB>end with "
                                      f"integer start and end") from None
            if start < 0 or end < start:
                raise LocalInputError(f"{path}:{lineno}: bad interval {start}-{end}")
            intervals.setdefault(normalize_contig(fields[0]), []).append((start, end))
        for contig, ivs in intervals.items():
            ivs.sort()
            merged: list[list[int]] = []
            for s, e in ivs:
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            starts[contig] = [s for s, _ in merged]
            ends[contig] = [e for _, e in merged]
        self._starts, self._ends = starts, ends
        log.info("%s: %d callable intervals", path, sum(len(s) for s in starts.values()))

    def covers(self, contig: str, pos: int) -> bool:
        """True if 1-based `pos` lies in a callable interval."""
        norm = normalize_contig(contig)
        starts = self._starts.get(norm)
        if not starts:
            return False
        i = bisect.bisect_right(starts, pos - 1) - 1
        return i >= 0 and pos - 1 < self._ends[norm][i]


@dataclass(frozen=True)
class Pileup:
    """Reads over one position: how many, and how many show each of the two panel alleles."""

    depth: int
    ref_reads: int
    alt_reads: int


class ReadDepth:
    """Base counts at single positions of an indexed BAM/CRAM."""

    def __init__(self, path: Path, reference: Path | None = None) -> None:
        self.path = path
        if not path.exists():
            raise LocalInputError(f"{path}: BAM/CRAM file not found")
        verbosity = pysam.set_verbosity(0)
        try:
            self._bam = pysam.AlignmentFile(str(path), reference_filename=(
                str(reference) if reference else None))
        except (ValueError, OSError) as exc:
            raise LocalInputError(f"{path}: cannot open as BAM/CRAM: {exc}") from None
        finally:
            pysam.set_verbosity(verbosity)
        if not self._bam.has_index():
            self._bam.close()
            raise LocalInputError(f"{path}: BAM/CRAM has no index; run: samtools index {path}")
        self._names = list(self._bam.references)

    def close(self) -> None:
        """Close the file."""
        self._bam.close()

    def pileup(self, contig: str, pos: int, ref: str, alt: str) -> Pileup:
        """Counts of reads (MAPQ >= MIN_MAPQ, no secondary/duplicate/QC-fail) at an SNV."""
        name = resolve(contig, self._names)
        if name is None:
            return Pileup(0, 0, 0)
        try:
            counts = self._bam.count_coverage(name, pos - 1, pos, quality_threshold=MIN_BASEQ,
                                              read_callback=_good_read)
        except (ValueError, OSError) as exc:
            raise LocalInputError(f"{self.path}:{contig}:{pos}: cannot read alignments: "
                                  f"{exc}") from None
        by_base = {b: int(np.asarray(c)[0]) for b, c in zip("ACGT", counts, strict=True)}
        return Pileup(sum(by_base.values()), by_base.get(ref, 0), by_base.get(alt, 0))


def _good_read(read: Any) -> bool:
    return bool(read.mapping_quality >= MIN_MAPQ and not read.flag & 0xF04)


class ReferenceGenome:
    """Bases of an indexed FASTA (to tell which panel allele is the reference)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise LocalInputError(f"{path}: reference FASTA not found")
        try:
            self._fa = pysam.FastaFile(str(path))
        except (ValueError, OSError) as exc:
            raise LocalInputError(f"{path}: cannot open reference FASTA (indexed with samtools "
                                  f"faidx?): {exc}") from None
        self._names = list(self._fa.references)

    def bases(self, contig: str, pos: int, length: int) -> str | None:
        """`length` bases from 1-based `pos`, upper case; None if the contig is unknown."""
        name = resolve(contig, self._names)
        if name is None:
            return None
        return str(self._fa.fetch(name, pos - 1, pos - 1 + length)).upper()

    def close(self) -> None:
        """Close the file."""
        self._fa.close()


def hom_ref_call(p: Pileup, min_depth: int) -> bool:
    """Enough reads, and few enough showing the ALT, to take an uncalled site as 0/0."""
    return p.depth >= min_depth and p.alt_reads <= MAX_ALT_FRACTION * p.depth
