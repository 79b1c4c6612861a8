"""Read a VCF/VCF.gz/BCF into copies of the panel's ALT allele at the panel's sites, following
../shared/VCF_RULES.md: opening and indexes, build check, contig aliases, absence resolved
through reference blocks / callable regions / read depth, filters per caller, GQ/DP, half
calls, multi-allelic counting, pgsc_calc's allele matching, haploid calls, multi-sample files.

This module does the I/O and the public API; per-record logic lives in `genotype.py`, per-site
state and the report in `extract.py`, the evidence for absent sites in `absence.py`, and the
region-or-stream choice in `access.py`.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from genofed.agent import access, genotype
from genofed.agent.absence import CallableRegions, ReadDepth, ReferenceGenome
from genofed.agent.contigs import (
    CONTIG_LENGTHS,
    BuildMismatch,
    header_build,
    normalize_contig,
    resolve,
)
from genofed.agent.extract import Extraction, ReadOptions
from genofed.errors import LocalInputError
from genofed.models.panel import Panel

__all__ = ["CONTIG_LENGTHS", "Dosages", "MatchRateTooLow", "ReadOptions", "load_npz",
           "normalize_contig", "read_dosages", "save_npz"]

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
ACCESS_MODES = ("auto", "region", "stream")
_PROGRESS_EVERY = 8192  # records between progress callbacks
_CONTIG_ID = re.compile(r"[<,]ID=([^,>]+)")


class MatchRateTooLow(LocalInputError):
    """The file gives dosages at too few panel sites to train on; carries the report."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Dosages:
    """ALT dosages of samples at panel sites, with the report of how they were read."""

    dosage: np.ndarray  # float32 [n_samples, n_sites], panel order, NaN where missing
    samples: tuple[str, ...]
    site_ids: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)
    ploidy: np.ndarray | None = None  # int8 [n_samples, n_sites]: 2, 1 (haploid), 0 unknown

    @property
    def mask(self) -> np.ndarray:
        """True where a dosage was observed."""
        return ~np.isnan(self.dosage)


def read_dosages(vcf: str | Path, panel: Panel, *, min_match_rate: float = 0.75,
                 min_gq: int = 0, min_dp: int = 0, callable_bed: str | Path | None = None,
                 bam: str | Path | None = None, min_depth: int = 10,
                 reference: str | Path | None = None, drop_ambiguous: bool = False,
                 access_mode: str = "auto", progress: Progress | None = None) -> Dosages:
    """Dosages of the panel's ALT alleles for every sample of a VCF/VCF.gz/BCF; refuses (one
    LocalInputError) below `min_match_rate`."""
    opts = ReadOptions(min_match_rate=min_match_rate, min_gq=min_gq, min_dp=min_dp,
                       min_depth=min_depth, drop_ambiguous=drop_ambiguous,
                       callable_bed=Path(callable_bed) if callable_bed else None,
                       bam=Path(bam) if bam else None,
                       reference=Path(reference) if reference else None)
    if access_mode not in ACCESS_MODES:
        raise LocalInputError(f"access must be one of {', '.join(ACCESS_MODES)}, got "
                              f"{access_mode!r}")
    return _read(Path(vcf), panel, opts, access_mode, progress)


def _read(path: Path, panel: Panel, opts: ReadOptions, access_mode: str,
          progress: Progress | None) -> Dosages:
    _check_path(path)
    stale = _index_is_stale(path)
    verbosity = pysam.set_verbosity(0)  # htslib warnings would bypass logging
    try:
        return _read_open(path, panel, opts, access_mode, progress, stale)
    finally:
        pysam.set_verbosity(verbosity)


def _read_open(path: Path, panel: Panel, opts: ReadOptions, access_mode: str,
               progress: Progress | None, stale: bool) -> Dosages:
    vf = _open(path)
    with vf:
        samples = tuple(vf.header.samples)
        if not samples:
            raise LocalInputError(f"{path}: VCF has no samples (sites-only file)")
        if "GT" not in vf.header.formats:
            raise LocalInputError(f"{path}: VCF header declares no GT (genotype) FORMAT field")
        try:
            build = header_build(panel.build, ((str(n), c.length)
                                               for n, c in vf.header.contigs.items()))
        except BuildMismatch as exc:
            raise LocalInputError(f"{path}: {exc}") from None
        if opts.bam is not None and len(samples) != 1:
            raise LocalInputError(f"{path}: --bam needs a single-sample VCF, this one has "
                                  f"{len(samples)} samples")
        reference = ReferenceGenome(opts.reference) if opts.reference else None
        ex = Extraction(panel, len(samples), opts, reference)
        declared = _declared_contigs(path, vf)
        reader = _RecordReader(path, vf, ex, declared)
        plan = _plan(path, vf, ex, declared, use_index=not stale, mode=access_mode)
        records = reader.regions(plan.regions) if plan.mode == "region" else reader.stream()
        total = len(plan.regions) if plan.mode == "region" else max(1, path.stat().st_size)
        try:
            reader.run(records, plan.mode, total, progress)
        except (OSError, ValueError) as exc:
            where = f" after {reader.last}" if reader.last else ""
            raise LocalInputError(f"{path}: cannot read records{where} (truncated or corrupt "
                                  f"file?): {exc}") from None
    bed = CallableRegions(opts.callable_bed) if opts.callable_bed else None
    depth = ReadDepth(opts.bam, opts.reference) if opts.bam else None
    try:
        ex.resolve_absent(bed, depth)
    finally:
        if depth is not None:
            depth.close()
        if reference is not None:
            reference.close()
    report = ex.report(file=str(path), build=build, access=plan.mode, index_stale=stale,
                       min_match_rate=opts.min_match_rate,
                       access_cost_s={"region": round(plan.cost_region_s, 4),
                                      "stream": round(plan.cost_stream_s, 4)})
    _log_report(path, report)
    if report["match_rate"] < opts.min_match_rate:
        m = report["missing"]
        top = ", ".join(f"{v} {k}" for k, v in sorted(m.items(), key=lambda kv: -kv[1]) if v)
        raise MatchRateTooLow(
            f"{path}: match rate {report['match_rate']:.3f} is below the minimum "
            f"{opts.min_match_rate:.3f} ({round(report['match_rate'] * len(panel))} of "
            f"{len(panel)} panel sites have a dosage; missing: {top or 'none'}); "
            f"refusing to train on it", report)
    return Dosages(dosage=ex.dosage, samples=samples, site_ids=tuple(panel.ids),
                   report=report, ploidy=ex.ploidy)


# The by_rid entry of a contig htslib added to the header itself (from a tabix index).
_UNDECLARED: tuple[str, dict[int, list[int]]] = ("", {})


class _RecordReader:
    """Streams pysam records into an Extraction, converting only those near panel sites."""

    def __init__(self, path: Path, vf: pysam.VariantFile, ex: Extraction,
                 declared: set[str]) -> None:
        self.path, self.vf, self.ex = path, vf, ex
        self.last = ""
        contigs = list(vf.header.contigs.items())
        # Per header contig id: its normalized name and {pos: panel site indices}, or None.
        self.by_rid: list[tuple[str, dict[int, list[int]]] | None] = [None] * len(contigs)
        for name, contig in contigs:
            if str(name) not in declared:
                self.by_rid[contig.id] = _UNDECLARED
                continue
            norm = normalize_contig(str(name))
            hits = {p: ex.index.at[(norm, p)] for p in ex.index.positions(norm)}
            if hits:
                self.by_rid[contig.id] = (norm, hits)
        fmt, info = vf.header.formats, vf.header.info
        single = len(vf.header.samples) == 1
        self.has_gq = "GQ" in fmt
        self.has_dp = "DP" in fmt
        self.has_min_dp = "MIN_DP" in fmt
        self.info_dp = single and "DP" in info  # medaka: depth in INFO/DP [13]
        self.info_min_dp = single and "MinDP" in info  # bcftools call -g blocks
        # Records spanning several bases matter only as reference blocks, which need END.
        self.spans = "END" in info

    def stream(self) -> Iterator[tuple[Iterator[Any], int]]:
        """Every record, once, as one run (from the first, whatever was fetched before)."""
        self.vf.reset()
        yield iter(self.vf), 0

    def regions(self, regions: tuple[tuple[str, int, int], ...]
                ) -> Iterator[tuple[Iterator[Any], int]]:
        """The records overlapping each region, with the region's start."""
        for name, start, stop in regions:
            yield self.vf.fetch(name, start - 1, stop), start

    def run(self, runs: Iterator[tuple[Iterator[Any], int]], mode: str, total: int,
            progress: Progress | None) -> None:
        """Feed every record near a panel site to the Extraction; the hot loop of the reader."""
        by_rid, ex, within = self.by_rid, self.ex, self.ex.index.within
        spans = self.spans
        rec = None
        try:
            for n_run, (records, start) in enumerate(runs, 1):
                while True:
                    chunk = 0
                    for rec in islice(records, _PROGRESS_EVERY):
                        chunk += 1
                        entry = by_rid[rec.rid]
                        if entry is None:
                            continue
                        if entry is _UNDECLARED:
                            raise IndexError
                        pos = rec.pos
                        hits = entry[1].get(pos)
                        if hits is not None and pos < start:
                            hits = None  # met in the previous region already
                        inside = None
                        if spans:
                            rlen = rec.rlen
                            if rlen > 1:
                                inside = within(entry[0], pos + 1, pos + rlen - 1)
                        if hits is None and not inside:
                            continue
                        self.last = f"{rec.chrom}:{pos}"
                        call = self._call(rec, block=bool(inside))
                        if hits is not None:
                            ex.add_record(call, hits)
                        if inside and genotype.is_reference_only(call.alleles):
                            ex.add_block(call, inside)
                    if progress is not None and (chunk or mode == "region"):
                        done = n_run if mode == "region" else self.vf.tell() >> 16
                        progress(min(1.0, done / total))
                    if chunk < _PROGRESS_EVERY:
                        break
        except IndexError:  # a contig the header does not declare
            assert rec is not None
            raise LocalInputError(f"{self.path}:{rec.chrom}:{rec.pos}: contig {rec.chrom} is not "
                                  f"declared in the header (##contig)") from None
        if progress is not None:
            progress(1.0)

    def _call(self, rec: Any, *, block: bool) -> genotype.Call:
        """A pysam record as a Call: alleles, filters, GT, GQ and depth per sample."""
        keys = rec.format.keys()
        samples = list(rec.samples.values())
        gq_key = "GQ" if self.has_gq and "GQ" in keys else None
        dp_key = ("MIN_DP" if block and self.has_min_dp and "MIN_DP" in keys else
                  "DP" if self.has_dp and "DP" in keys else None)
        info_dp: int | None = None
        if dp_key is None:
            key = "MinDP" if block and self.info_min_dp else "DP" if self.info_dp else None
            if key is not None:
                info_dp = _int(rec.info.get(key))
        n = len(samples)
        return genotype.Call(
            contig=rec.chrom, pos=rec.pos, stop=rec.stop,
            alleles=tuple(a.upper() for a in rec.alleles),
            filters=tuple(rec.filter.keys()),
            gts=tuple(s.allele_indices for s in samples),
            gq=tuple(_int(s.get(gq_key)) for s in samples) if gq_key else (None,) * n,
            dp=(tuple(_int(s.get(dp_key)) for s in samples) if dp_key else (info_dp,) * n))


def _int(v: Any) -> int | None:
    """An integer FORMAT/INFO value (the first of a tuple), None if missing."""
    if isinstance(v, tuple):
        v = v[0] if v else None
    return None if v is None else int(v)


def _plan(path: Path, vf: pysam.VariantFile, ex: Extraction, declared: set[str], *,
          use_index: bool, mode: str) -> access.Plan:
    """Region fetches or a stream: forced by `mode`, else the cheaper by access.plan."""
    if mode == "stream" or not use_index or vf.index is None:
        if mode == "region":
            log.warning("%s: no usable index; streaming instead of region fetches", path)
        return access.Plan("stream", (), float("inf"), 0.0)
    indexed = {str(n) for n in vf.index}
    sites: dict[str, Sequence[int]] = {}
    for norm in ex.index.contigs():
        name = resolve(norm, indexed)
        if name is None:
            log.info("%s: no records on the panel's contig %s", path, norm)
            continue
        if name not in declared:
            raise LocalInputError(f"{path}:{name}: contig {name} is not declared in the header "
                                  f"(##contig)")
        sites[name] = ex.index.positions(norm)
    density, probe = _density(path)
    if not _index_agrees(vf, probe):
        log.warning("%s: the index does not find the file's first record (made for another "
                    "file?); ignoring it and streaming", path)
        return access.Plan("stream", (), float("inf"), 0.0)
    if mode == "region":  # forced: a fetch per site, whatever the cost
        density = access.Density(float("inf"), 1.0)
    p = access.plan(sites, density)
    log.info("%s: %s access (estimated %.2f s by region, %.2f s streaming, %d regions)",
             path, p.mode, p.cost_region_s, p.cost_stream_s, len(p.regions))
    return p


def _declared_contigs(path: Path, vf: pysam.VariantFile) -> set[str]:
    """Contigs the file's own header declares. htslib adds those a tabix index names to the
    header it hands out, so a VCF's header text is read again; a BCF cannot lack them."""
    if vf.is_bcf:
        return {str(n) for n in vf.header.contigs}
    names: set[str] = set()
    try:
        with (gzip.open(path, "rt") if vf.compression != "NONE" else path.open()) as f:
            for line in f:
                if not line.startswith("##"):
                    break
                if line.startswith("##contig=<"):
                    m = _CONTIG_ID.search(line)
                    if m:
                        names.add(m.group(1))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise LocalInputError(f"{path}: cannot read the header (truncated or corrupt?): "
                              f"{exc}") from None
    return names


def _density(path: Path) -> tuple[access.Density | None, tuple[str, int] | None]:
    """Records and bases per record from the first records of the file, and the first
    record's (contig, pos) to check the index against."""
    with pysam.VariantFile(str(path)) as vf:
        start = vf.tell() >> 16
        n, first, last, contig, probe = 0, 0, 0, None, None
        for rec in vf:
            if contig is None:
                contig, first, probe = rec.rid, rec.pos, (str(rec.chrom), int(rec.pos))
            elif rec.rid != contig:
                break
            n, last = n + 1, rec.pos
            if n >= access.SAMPLE_RECORDS:
                break
        used = (vf.tell() >> 16) - start
    return access.estimate_density(n, used, path.stat().st_size - start, first, last), probe


def _index_agrees(vf: pysam.VariantFile, probe: tuple[str, int] | None) -> bool:
    """The index finds the file's first record where it is (an index made for another
    file, or for an older version of this one, does not)."""
    if probe is None:
        return True
    name, pos = probe
    try:
        return any(r.pos == pos for r in vf.fetch(name, pos - 1, pos))
    except (OSError, ValueError):
        return False


def _log_report(path: Path, r: dict[str, Any]) -> None:
    log.info("%s: %d/%d panel sites have a dosage (%d swapped, %d strand-flipped); "
             "missing: %s", path, round(r["match_rate"] * r["panel_sites"]), r["panel_sites"],
             r["matched_swapped"], r["strand_flips"],
             ", ".join(f"{k} {v}" for k, v in r["missing"].items() if v) or "none")
    if r["strand_flips"]:
        log.warning("%s: %d panel sites matched only on the other strand although the build "
                    "agrees; is the panel on the minus strand? Its ambiguous A/T and C/G SNPs "
                    "cannot be checked (consider drop_ambiguous)", path, r["strand_flips"])
    if r["ploidy"]["haploid_in_par"]:
        log.warning("%s: %d haploid calls inside chrX's pseudo-autosomal regions", path,
                    r["ploidy"]["haploid_in_par"])
    if r["unnormalized_records"] or r["panel_unnormalized"]:
        log.warning("%s: %d records and %d panel sites look unnormalized (run bcftools norm); "
                    "they were not guessed at", path, r["unnormalized_records"],
                    r["panel_unnormalized"])


def save_npz(path: str | Path, d: Dosages) -> None:
    """Write dosages to an .npz (keys dosage, samples, site_ids, ploidy, report as JSON)."""
    p = Path(path)
    arrays: dict[str, np.ndarray] = {
        "dosage": d.dosage.astype(np.float32), "samples": np.array(d.samples, dtype=str),
        "site_ids": np.array(d.site_ids, dtype=str), "report": np.array(json.dumps(d.report))}
    if d.ploidy is not None:
        arrays["ploidy"] = d.ploidy.astype(np.int8)
    try:
        with p.open("wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    except OSError as exc:
        raise LocalInputError(f"{p}: cannot write dosages: {exc}") from None


def load_npz(path: str | Path) -> Dosages:
    """Read dosages written by `save_npz`."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            dosage = z["dosage"].astype(np.float32)
            samples = tuple(str(s) for s in z["samples"])
            site_ids = tuple(str(s) for s in z["site_ids"])
            report = json.loads(str(z["report"])) if "report" in z.files else {}
            ploidy = z["ploidy"].astype(np.int8) if "ploidy" in z.files else None
    except FileNotFoundError:
        raise LocalInputError(f"{p}: dosage file not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise LocalInputError(f"{p}: not a genofed dosage .npz: {exc}") from None
    if dosage.shape != (len(samples), len(site_ids)):
        raise LocalInputError(f"{p}: dosage shape {dosage.shape} does not match "
                              f"{len(samples)} samples x {len(site_ids)} sites")
    return Dosages(dosage=dosage, samples=samples, site_ids=site_ids, report=report,
                   ploidy=ploidy)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise LocalInputError(f"{path}: VCF file not found")
    if path.is_dir():
        raise LocalInputError(f"{path}: is a directory, not a VCF/BCF file")
    if path.stat().st_size == 0:
        raise LocalInputError(f"{path}: file is empty, not a VCF/BCF")


def _open(path: Path) -> pysam.VariantFile:
    """Open a VCF/BCF; every failure is a LocalInputError."""
    try:
        vf = pysam.VariantFile(str(path))
    except ValueError:
        raise LocalInputError(f"{path}: not a VCF/BCF file") from None
    except NotImplementedError:  # htslib cannot seek in plain gzip
        raise LocalInputError(f"{path}: compressed with plain gzip, not bgzip; recompress it: "
                              f"zcat {path} | bgzip > fixed.vcf.gz") from None
    except OSError as exc:
        if exc.errno == errno.ENOEXEC:  # htslib: unrecognised format
            raise LocalInputError(f"{path}: not a VCF/BCF file") from None
        raise LocalInputError(f"{path}: cannot open VCF/BCF (truncated or corrupt?): "
                              f"{exc.strerror or exc}") from None
    if not vf.is_vcf and not vf.is_bcf:
        vf.close()
        raise LocalInputError(f"{path}: not a VCF/BCF file (format {vf.format})")
    return vf


def _index_is_stale(path: Path) -> bool:
    """True if a .tbi/.csi beside the file is older than it (htslib would trust it anyway)."""
    for suffix in (".tbi", ".csi"):
        index = path.with_name(path.name + suffix)
        if index.exists() and index.stat().st_mtime < path.stat().st_mtime:
            log.warning("%s: index %s is older than the file; ignoring it and streaming",
                        path, index.name)
            return True
    return False
