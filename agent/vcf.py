"""Read a VCF/VCF.gz/BCF into copies of the panel's ALT allele at the panel's sites, following
../shared/VCF_RULES.md: opening and indexes, build check, contig aliases, absence resolved
through reference blocks / callable regions / read depth, filters per caller, GQ/DP, half
calls, multi-allelic counting, pgsc_calc's allele matching, haploid calls, multi-sample files.

This module does the opening, the header checks and the public API; the per-record loop lives
in `records.py`, per-record logic in `genotype.py`, per-site state and the report in
`extract.py`, the evidence for absent sites in `absence.py`, and the region-or-stream choice
in `plan.py` (I/O) and `access.py` (the cost model).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from genofed.agent import access
from genofed.agent import plan as planning
from genofed.agent.absence import CallableRegions, ReadDepth, ReferenceGenome
from genofed.agent.contigs import CONTIG_LENGTHS, BuildMismatch, header_build, normalize_contig
from genofed.agent.extract import Extraction, ReadOptions
from genofed.agent.opening import check_path, first_record_has_gt, open_variants, warn_piped
from genofed.agent.records import RecordReader
from genofed.errors import LocalInputError
from genofed.models.builds import contig_build, named_build
from genofed.models.panel import Panel

__all__ = ["CONTIG_LENGTHS", "Dosages", "MatchRateTooLow", "ReadOptions", "load_npz",
           "normalize_contig", "read_dosages", "save_npz"]

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
ACCESS_MODES = ("auto", "region", "stream")


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
    check_path(path)
    stale = planning.index_is_stale(path)
    verbosity = pysam.set_verbosity(0)  # htslib warnings would bypass logging
    try:
        return _read_open(path, panel, opts, access_mode, progress, stale)
    finally:
        pysam.set_verbosity(verbosity)


def _read_open(path: Path, panel: Panel, opts: ReadOptions, access_mode: str,
               progress: Progress | None, stale: bool) -> Dosages:
    opened = open_variants(path)
    try:
        with opened.vf as vf:
            samples, build, evidence, reader, plan = _read_records(
                path, vf, panel, opts, access_mode, progress, stale or opened.piped)
    except OSError as exc:  # htslib reports a failed read again when the file is closed
        raise LocalInputError(f"{path}: cannot read records (truncated or corrupt file?): "
                              f"{exc.strerror or exc}") from None
    finally:
        if opened.feeder is not None:
            opened.feeder.join()
    opened.finish(path)
    if opened.piped:
        warn_piped(path)
    ex = reader.ex
    reference = ex.reference
    bed = CallableRegions(opts.callable_bed) if opts.callable_bed else None
    depth = ReadDepth(opts.bam, opts.reference) if opts.bam else None
    try:
        ex.resolve_absent(bed, depth)
    finally:
        if depth is not None:
            depth.close()
        if reference is not None:
            reference.close()
    report = ex.report(file=str(path), build=build, build_evidence=evidence, access=plan.mode,
                       index_stale=stale, gt_not_first_records=reader.gt_elsewhere,
                       min_match_rate=opts.min_match_rate,
                       access_cost_s={"region": round(plan.cost_region_s, 4),
                                      "stream": round(plan.cost_stream_s, 4)})
    _log_report(path, report)
    if report["match_rate"] < opts.min_match_rate:
        m = report["missing"]
        top = ", ".join(f"{v} {k}" for k, v in sorted(m.items(), key=lambda kv: -kv[1]) if v)
        unverified = "; build not verified: no contig lengths" if build == "unverified" else ""
        raise MatchRateTooLow(
            f"{path}: match rate {report['match_rate']:.3f} is below the minimum "
            f"{opts.min_match_rate:.3f} ({round(report['match_rate'] * len(panel))} of "
            f"{len(panel)} panel sites have a dosage; missing: {top or 'none'}{unverified}); "
            f"refusing to train on it", report)
    return Dosages(dosage=ex.dosage, samples=samples, site_ids=tuple(panel.ids),
                   report=report, ploidy=ex.ploidy)


def _read_records(path: Path, vf: pysam.VariantFile, panel: Panel, opts: ReadOptions,
                  access_mode: str, progress: Progress | None, stale: bool
                  ) -> tuple[tuple[str, ...], str, str, RecordReader, access.Plan]:
    """Check the header, plan the access and feed every record near a panel site to a new
    Extraction; the file's samples, build, build evidence, reader and plan."""
    samples = tuple(vf.header.samples)
    if not samples:
        raise LocalInputError(f"{path}: VCF has no samples (sites-only file)")
    if "GT" not in vf.header.formats and not first_record_has_gt(path):
        # htslib reads a GT the header forgot to declare; refuse only when records lack it
        raise LocalInputError(f"{path}: VCF header declares no GT (genotype) FORMAT field")
    names = [f"##{r.key}={r.value}" for r in vf.header.records
             if r.key in ("reference", "assembly") and r.value]
    try:
        build = header_build(panel.build, ((str(n), c.length)
                                           for n, c in vf.header.contigs.items()), names)
    except BuildMismatch as exc:
        raise LocalInputError(f"{path}: {exc}") from None
    if opts.bam is not None and len(samples) != 1:
        raise LocalInputError(f"{path}: --bam needs a single-sample VCF, this one has "
                              f"{len(samples)} samples")
    reference = ReferenceGenome(opts.reference) if opts.reference else None
    ex = Extraction(panel, len(samples), opts, reference)
    reader = RecordReader(path, vf, ex)
    plan = planning.choose(path, vf, ex, use_index=not stale, mode=access_mode)
    records = reader.regions(plan.regions) if plan.mode == "region" else reader.stream()
    total = len(plan.regions) if plan.mode == "region" else max(1, path.stat().st_size)
    try:
        reader.run(records, plan.mode, total, progress)
    except (OSError, ValueError) as exc:
        where = f" after {reader.last}" if reader.last else ""
        index = planning.index_path(path) if plan.mode == "region" else None
        if index is not None:
            raise LocalInputError(
                f"{path}: reading through the index {index} failed{where}: the index was made "
                f"for another file or is damaged; rebuild it (tabix -f -p vcf, or bcftools "
                f"index -f) or pass --access stream") from None
        raise LocalInputError(f"{path}: cannot read records{where} (truncated or corrupt "
                              f"file?): {exc}") from None
    evidence = "contig lengths" if build != "unverified" else _unverified(
        path, panel.build, names, reader, plan, vf)
    return samples, build, evidence, reader, plan


def _unverified(path: Path, build: str, names: list[str], reader: RecordReader,
                plan: access.Plan, vf: pysam.VariantFile) -> str:
    """The evidence on the build of a header without contig lengths [4]: refuses on a record
    past the end of a contig of the panel's build, else says what it saw, in a warning."""
    past = next(iter(reader.past_end.items()), None)
    if past is None and plan.mode == "region":  # only the panel's regions were read
        past = planning.past_build_end(path, build, [str(n) for n in vf.header.contigs])
    if past is not None:
        contig, pos = past
        length = CONTIG_LENGTHS[build][normalize_contig(contig)]
        raise LocalInputError(f"{path}:{contig}:{pos}: a record past the end of {contig} in "
                              f"{build} ({length:,} bp): the file is on another build; no "
                              f"liftover is done")
    agree = [n for n in names if named_build(n) == build] + [
        f"contig {n}" for n in map(str, vf.header.contigs) if contig_build(n) == build][:3]
    evidence = (f"the header names {build} ({'; '.join(agree)})" if agree else
                f"{'; '.join(names)} names no known build" if names else
                "no ##reference or ##assembly line")
    evidence += f"; no record past a {build} contig end"
    log.warning("%s: build not verified: no contig lengths in the header (%s)", path, evidence)
    return f"build not verified: no contig lengths; {evidence}"


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
    """Write dosages to an .npz (keys dosage, samples, site_ids as one string a line per
    site, ploidy, report as JSON)."""
    p = Path(path)
    arrays: dict[str, np.ndarray] = {
        "dosage": d.dosage.astype(np.float32), "samples": np.array(d.samples, dtype=str),
        # One string, a line per site: a fixed-width array would pad every ID to the longest
        # (a 3,000-base indel's chrom:pos:ref:alt made a 10,000-site file 140 MB).
        "site_ids": np.array("\n".join(d.site_ids)), "report": np.array(json.dumps(d.report))}
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
            ids = z["site_ids"]
            site_ids = (tuple(str(s) for s in ids) if ids.ndim else  # older: an ID an element
                        tuple(str(ids).split("\n")) if dosage.ndim == 2 and dosage.shape[1]
                        else ())
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
