"""Region fetches or one streaming pass: which is cheaper for this panel against this file.

A fetch costs an index lookup, a seek and a BGZF block to decompress and parse up to the first
wanted record (about FETCH_US); a streamed record costs about RECORD_US (pysam, measured on
single-sample files), and a record read inside a region REGION_FACTOR times that: htslib's
region iterator parses each line's position before pysam parses the record (measured on the
1000 Genomes chr22 file of r-bioc-variantannotation: 5.5 against 4.0 us a record). Sites
closer than the records one fetch costs share a fetch. Without that factor a full panel, whose
regions cover the whole file, came out a little cheaper by region and was read 2x slower.
Region fetches must also win by REGION_MARGIN: where the two estimates are close the model's
error decides (a 100,000-site panel on a 1,000,000-record file, 1.97 s by region against 2.15
s streaming by the model, read in 5.2 s against 4.0 s), and a stream has no index to trust.
The choice is a pure function of a few numbers measured from the file's first records (and
the record count of its index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RECORD_US = 1.4  # parsing one record, streamed
REGION_FACTOR = 1.4  # a record met inside a region fetch costs this many streamed ones
REGION_MARGIN = 0.8  # region fetches are chosen below this fraction of the stream's cost
FETCH_US = 130.0  # one region fetch: seek + block decompression + records before the first hit
SAMPLE_RECORDS = 2000  # records read from the file's start to measure its density
PLANNING_US = 20_000.0  # measuring the density and checking the index (1000G chr22: ~20 ms)


@dataclass(frozen=True)
class Density:
    """What the file's first records say about the whole file."""

    records: float  # estimated records in the file
    bp_per_record: float  # genome span per record (reference blocks make it large)


@dataclass(frozen=True)
class Plan:
    """How to read: "region" over `regions` (contig, 1-based start, stop), or "stream"."""

    mode: str
    regions: tuple[tuple[str, int, int], ...]
    cost_region_s: float
    cost_stream_s: float


def estimate_density(n_sampled: int, sample_bytes: int, file_bytes: int,
                     first_pos: int, last_pos: int) -> Density | None:
    """Density from `n_sampled` records that took `sample_bytes` of the (compressed) file and
    spanned first_pos..last_pos on one contig; None if too few records to say."""
    if n_sampled < 2 or sample_bytes <= 0:
        return None
    per_record = sample_bytes / n_sampled
    span = max(1, last_pos - first_pos)
    return Density(records=max(float(n_sampled), file_bytes / per_record),
                   bp_per_record=span / (n_sampled - 1))


def stream_without_planning(records: int) -> bool:
    """True when streaming the whole file costs less than planning would: the most a plan
    can save is the stream itself."""
    return records * RECORD_US < PLANNING_US


def merge(positions: Sequence[int], gap: int) -> list[tuple[int, int]]:
    """Sorted positions grouped into (start, stop) runs whose neighbours are <= gap apart."""
    runs: list[tuple[int, int]] = []
    if not positions:
        return runs
    start = prev = positions[0]
    for pos in positions[1:]:
        if pos - prev > gap:
            runs.append((start, prev))
            start = pos
        prev = pos
    runs.append((start, prev))
    return runs


def plan(sites: dict[str, Sequence[int]], density: Density | None) -> Plan:
    """Region fetches when they cost less than streaming the file, given sorted panel
    positions per file contig name; stream when the density is unknown."""
    if density is None:
        return Plan("stream", (), float("inf"), 0.0)
    region_us = RECORD_US * REGION_FACTOR
    gap = max(1, int(FETCH_US / region_us * density.bp_per_record))
    regions = tuple((name, a, b) for name, positions in sites.items()
                    for a, b in merge(positions, gap))
    records_in = sum((b - a) / density.bp_per_record + 1 for _, a, b in regions)
    cost_region = (len(regions) * FETCH_US + records_in * region_us) / 1e6
    cost_stream = density.records * RECORD_US / 1e6
    mode = "region" if cost_region < REGION_MARGIN * cost_stream else "stream"
    return Plan(mode, regions, cost_region, cost_stream)
