"""The I/O around the access plan: whether the file's index can be trusted, the density of its
first records, and where the index says records lie past the panel build's contig ends.
`access.py` makes the choice from the numbers gathered here."""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import pysam

from genofed.agent import access
from genofed.agent.contigs import resolve
from genofed.agent.extract import Extraction
from genofed.models.builds import CONTIG_LENGTHS

log = logging.getLogger(__name__)

_STREAM = access.Plan("stream", (), float("inf"), 0.0)


def index_path(path: Path) -> Path | None:
    """The .tbi/.csi htslib would use for `path`, if there is one."""
    for suffix in (".tbi", ".csi"):
        index = path.with_name(path.name + suffix)
        if index.exists():
            return index
    return None


def index_is_stale(path: Path) -> bool:
    """True if a .tbi/.csi beside the file is older than it (htslib would trust it anyway)."""
    index = index_path(path)
    if index is not None and index.stat().st_mtime < path.stat().st_mtime:
        log.warning("%s: index %s is older than the file; ignoring it and streaming",
                    path, index.name)
        return True
    return False


def choose(path: Path, vf: pysam.VariantFile, ex: Extraction, *, use_index: bool,
           mode: str) -> access.Plan:
    """Region fetches or a stream: forced by `mode`, else the cheaper by access.plan."""
    index = index_path(path)
    if mode == "stream" or not use_index or vf.index is None:
        if mode == "region" or (index is not None and use_index and vf.index is None):
            log.warning("%s: no usable index%s; streaming instead of region fetches", path,
                        f" ({index.name} cannot be read)" if index and use_index else "")
        return _STREAM
    indexed = {str(n) for n in vf.index}
    sites: dict[str, Sequence[int]] = {}
    for norm in ex.index.contigs():
        name = resolve(norm, indexed)
        if name is None:
            log.info("%s: no records on the panel's contig %s", path, norm)
            continue
        sites[name] = ex.index.positions(norm)
    summary = _index_summary(index)
    if mode != "region" and summary is not None and summary[1] > 0 and \
            access.stream_without_planning(summary[1]):
        log.info("%s: %d records: one stream, no plan", path, summary[1])
        return access.Plan("stream", (), float("inf"), summary[1] * access.RECORD_US / 1e6)
    density, probes = _density(path)
    if mode == "region":  # forced: a fetch per site, whatever the cost
        density = access.Density(float("inf"), 1.0)
    elif density is not None and summary is not None and summary[1]:
        # the index counts the records exactly; the first blocks' bytes only estimate it
        density = access.Density(float(summary[1]), density.bp_per_record)
    p = access.plan(sites, density)
    # The index is checked only when it is to be used: a stream needs none of it.
    if p.mode == "region" and (not _index_agrees(path, probes)
                               or not _index_ends_with_file(path, summary)):
        log.warning("%s: the index %s does not find the file's records where they are (made "
                    "for another file?); ignoring it and streaming", path,
                    index.name if index else "?")
        return _STREAM
    log.info("%s: %s access (estimated %.2f s by region, %.2f s streaming, %d regions)",
             path, p.mode, p.cost_region_s, p.cost_stream_s, len(p.regions))
    return p


def past_build_end(path: Path, build: str, names: Sequence[str]) -> tuple[str, int] | None:
    """A record the index finds past the end of its contig in `build` (evidence that the file
    is on another build), or None. Only the file's own contig names are asked."""
    lengths = CONTIG_LENGTHS.get(build, {})
    try:
        with pysam.VariantFile(str(path)) as vf:
            for name in names:
                norm = resolve(name, lengths)
                if norm is None:
                    continue
                for rec in vf.fetch(name, lengths[norm], 1 << 29):
                    return name, int(rec.pos)
    except (OSError, ValueError):
        return None
    return None


def _density(path: Path) -> tuple[access.Density | None, list[tuple[str, int]]]:
    """Records and bases per record from the first records of the file, and the first and
    last of them as (contig, pos), to check the index against."""
    with pysam.VariantFile(str(path)) as vf:
        start = vf.tell() >> 16
        n, first, last, contig = 0, 0, 0, None
        probes: list[tuple[str, int]] = []
        for rec in vf:
            if contig is None:
                contig, first = rec.rid, rec.pos
                probes.append((str(rec.chrom), int(rec.pos)))
            elif rec.rid != contig:
                break
            n, last = n + 1, rec.pos
            if n >= access.SAMPLE_RECORDS:
                break
        used = (vf.tell() >> 16) - start
    if n > 1:
        probes.append((probes[0][0], int(last)))
    return access.estimate_density(n, used, path.stat().st_size - start, first, last), probes


def _index_agrees(path: Path, probes: list[tuple[str, int]]) -> bool:
    """The index finds the file's first records where they are (an index made for another
    file, or for an older version of this one, does not). A handle of its own: a failed read
    leaves an htslib handle unusable, down to its close."""
    try:
        with pysam.VariantFile(str(path)) as vf:
            return all(any(r.pos == pos for r in vf.fetch(name, pos - 1, pos))
                       for name, pos in probes)
    except (OSError, ValueError):
        return False


def _index_ends_with_file(path: Path, summary: tuple[int, int] | None) -> bool:
    """The last record the index knows ends where the file's records end: reading on from
    there finds nothing. An index made for another file points elsewhere (past the end, into
    the middle of a block, or before records it does not know)."""
    if summary is None:  # truncated, or not a .tbi/.csi: it cannot say where records are
        return False
    end = summary[0]
    if end >> 16 >= path.stat().st_size:  # a block past the end of the file
        return False
    try:
        with pysam.VariantFile(str(path)) as vf:
            vf.seek(end)
            return next(iter(vf), None) is None
    except (OSError, ValueError, StopIteration):
        return False


def _index_summary(index: Path | None) -> tuple[int, int] | None:
    """(largest chunk end, a BGZF virtual offset; records the index counts) of a .tbi or .csi
    (the formats of the SAM/tabix specifications), None if unreadable. Written here because
    pysam exposes neither (its get_index_statistics is for BAM files)."""
    if index is None:
        return None
    try:
        data = gzip.decompress(index.read_bytes())
    except (OSError, EOFError, zlib.error):
        return None
    try:
        if data[:4] == b"TBI\x01":
            n_ref = struct.unpack_from("<i", data, 4)[0]
            l_nm = struct.unpack_from("<i", data, 32)[0]
            at, pseudo, csi = 36 + l_nm, 37450, False
        elif data[:4] == b"CSI\x01":
            _, depth, l_aux = struct.unpack_from("<iii", data, 4)
            at = 16 + l_aux
            n_ref = struct.unpack_from("<i", data, at)[0]
            at, pseudo, csi = at + 4, ((1 << ((depth + 1) * 3)) - 1) // 7 + 1, True
        else:
            return None
        last = records = 0
        for _ in range(n_ref):
            n_bin = struct.unpack_from("<i", data, at)[0]
            at += 4
            for _ in range(n_bin):
                bin_id = struct.unpack_from("<I", data, at)[0]
                at += 12 if csi else 4  # bin (+ loffset in a CSI)
                n_chunk = struct.unpack_from("<i", data, at)[0]
                at += 4
                if bin_id == pseudo and n_chunk == 2:  # (file range), (mapped, unmapped)
                    records += struct.unpack_from("<Q", data, at + 16)[0]
                elif n_chunk:
                    ends = struct.unpack_from(f"<{2 * n_chunk}Q", data, at)[1::2]
                    last = max(last, *ends)
                at += 16 * n_chunk
            if not csi:  # the linear index
                n_intv = struct.unpack_from("<i", data, at)[0]
                at += 4 + 8 * n_intv
        return (last, records) if last else None
    except struct.error:
        return None
