"""Read a VCF/VCF.gz/BCF into ALT dosages at the panel's sites (the rules: VCF_RULES.md).

First version: exact and swapped allele matching (no strand flips), multi-allelic records
counted for the panel's specific ALT, FILTER PASS/`.` only, missing and half calls as NaN, a
site absent from the file as NaN (never hom-ref), `1`<->`chr1` and `MT`<->`chrM` aliases, and
a contig-length check of the header against the panel's build. No gVCF blocks, GQ/DP
thresholds or BAM depth yet.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from genofed.errors import GenofedError
from genofed.models.panel import Panel, Site

log = logging.getLogger(__name__)

FETCH_GAP = 100_000  # panel sites closer than this share one region fetch
_MATCHED, _SWAPPED, _FILTERED = 1, 2, 3

# Contig lengths per build, keyed by contig name without "chr" (MT as "M").
CONTIG_LENGTHS: dict[str, dict[str, int]] = {
    "GRCh38": {
        "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259,
        "6": 170805979, "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422,
        "11": 135086622, "12": 133275309, "13": 114364328, "14": 107043718, "15": 101991189,
        "16": 90338345, "17": 83257441, "18": 80373285, "19": 58617616, "20": 64444167,
        "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415,
    },
    "GRCh37": {
        "1": 249250621, "2": 243199373, "3": 198022430, "4": 191154276, "5": 180915260,
        "6": 171115067, "7": 159138663, "8": 146364022, "9": 141213431, "10": 135534747,
        "11": 135006516, "12": 133851895, "13": 115169878, "14": 107349540, "15": 102531392,
        "16": 90354753, "17": 81195210, "18": 78077248, "19": 59128983, "20": 63025520,
        "21": 48129895, "22": 51304566, "X": 155270560, "Y": 59373566,
    },
}


@dataclass(frozen=True)
class Dosages:
    """ALT dosages of samples at panel sites, with the report of how they were read."""

    dosage: np.ndarray  # float32 [n_samples, n_sites], panel order, NaN where missing
    samples: tuple[str, ...]
    site_ids: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """True where a dosage was observed."""
        return ~np.isnan(self.dosage)


def normalize_contig(name: str) -> str:
    """Contig name without a `chr` prefix, with `MT` written `M`: `chr1`->`1`, `MT`->`M`."""
    base = name[3:] if name[:3].lower() == "chr" else name
    return "M" if base.upper() in ("M", "MT") else base


def read_dosages(vcf: str | Path, panel: Panel, *, min_match_rate: float = 0.0) -> Dosages:
    """Dosages of the panel's ALT alleles for every sample of a VCF/VCF.gz/BCF."""
    path = Path(vcf)
    if not path.exists():
        raise GenofedError(f"{path}: VCF file not found")
    if path.is_dir():
        raise GenofedError(f"{path}: is a directory, not a VCF/BCF file")
    vf = _open(path)
    with vf:
        samples = tuple(vf.header.samples)
        if not samples:
            raise GenofedError(f"{path}: VCF has no samples (sites-only file)")
        if "GT" not in vf.header.formats:
            raise GenofedError(f"{path}: VCF header declares no GT (genotype) FORMAT field")
        build = _check_build(path, vf.header, panel)
        reader = _Reader(panel, len(samples))
        stale = _index_is_stale(path)
        records, access = _records(vf, panel, use_index=not stale)
        try:
            for rec in records:
                reader.add(rec)
        except (OSError, ValueError) as exc:
            raise GenofedError(f"{path}: cannot read records (truncated or corrupt file?): "
                               f"{exc}") from None
    report = reader.report(path, build, access)
    report["index_stale"] = stale
    log.info("%s: %d/%d panel sites matched (%d swapped), %d absent, %d filtered, "
             "%d missing genotypes", path, report["matched"] + report["matched_swapped"],
             report["panel_sites"], report["matched_swapped"], report["missing_absent"],
             report["missing_filtered"], report["missing_genotype"])
    if report["match_rate"] < min_match_rate:
        raise GenofedError(
            f"{path}: match rate {report['match_rate']:.3f} is below the minimum "
            f"{min_match_rate:.3f} ({report['matched'] + report['matched_swapped']} of "
            f"{report['panel_sites']} panel sites; {report['missing_absent']} absent, "
            f"{report['missing_filtered']} filtered)")
    return Dosages(dosage=reader.dosage, samples=samples, site_ids=tuple(panel.ids),
                   report=report)


def save_npz(path: str | Path, d: Dosages) -> None:
    """Write dosages to an .npz (keys dosage, samples, site_ids, report as JSON)."""
    p = Path(path)
    try:
        with p.open("wb") as f:
            np.savez_compressed(f, dosage=d.dosage.astype(np.float32),
                                samples=np.array(d.samples, dtype=str),
                                site_ids=np.array(d.site_ids, dtype=str),
                                report=np.array(json.dumps(d.report)))
    except OSError as exc:
        raise GenofedError(f"{p}: cannot write dosages: {exc}") from None


def load_npz(path: str | Path) -> Dosages:
    """Read dosages written by `save_npz`."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            dosage = z["dosage"].astype(np.float32)
            samples = tuple(str(s) for s in z["samples"])
            site_ids = tuple(str(s) for s in z["site_ids"])
            report = json.loads(str(z["report"])) if "report" in z.files else {}
    except FileNotFoundError:
        raise GenofedError(f"{p}: dosage file not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise GenofedError(f"{p}: not a genofed dosage .npz: {exc}") from None
    if dosage.shape != (len(samples), len(site_ids)):
        raise GenofedError(f"{p}: dosage shape {dosage.shape} does not match "
                           f"{len(samples)} samples x {len(site_ids)} sites")
    return Dosages(dosage=dosage, samples=samples, site_ids=site_ids, report=report)


def _open(path: Path) -> pysam.VariantFile:
    """Open with htslib's own stderr chatter silenced; every failure is a GenofedError."""
    verbosity = pysam.set_verbosity(0)
    try:
        vf = pysam.VariantFile(str(path))
    except ValueError:
        raise GenofedError(f"{path}: not a VCF/BCF file") from None
    except NotImplementedError:  # htslib cannot seek in plain gzip
        raise GenofedError(f"{path}: compressed with plain gzip, not bgzip; recompress it: "
                           f"zcat {path} | bgzip > fixed.vcf.gz") from None
    except OSError as exc:
        if exc.errno == errno.ENOEXEC:  # htslib: unrecognised format
            raise GenofedError(f"{path}: not a VCF/BCF file") from None
        raise GenofedError(f"{path}: cannot open VCF/BCF (truncated or corrupt?): "
                           f"{exc.strerror or exc}") from None
    finally:
        pysam.set_verbosity(verbosity)
    if not vf.is_vcf and not vf.is_bcf:
        vf.close()
        raise GenofedError(f"{path}: not a VCF/BCF file (format {vf.format})")
    return vf


def _check_build(path: Path, header: Any, panel: Panel) -> str:
    """Build the header's contig lengths agree with; error if they contradict the panel's."""
    wanted = {normalize_contig(s.chrom) for s in panel.sites}
    expected = CONTIG_LENGTHS.get(panel.build, {})
    verified = False
    for name, contig in header.contigs.items():
        norm = normalize_contig(name)
        length = contig.length
        if norm not in wanted or norm not in expected or length is None:
            continue
        if length == expected[norm]:
            verified = True
            continue
        others = [b for b, t in CONTIG_LENGTHS.items() if t.get(norm) == length]
        what = f"the {others[0]} length" if others else "an unknown length"
        raise GenofedError(f"{path}: contig {name} has length {length}, {what}; the panel is "
                           f"{panel.build} ({expected[norm]}); no liftover is done")
    return panel.build if verified else "unverified"


def _index_is_stale(path: Path) -> bool:
    """True if a .tbi/.csi beside the file is older than it (htslib would trust it anyway)."""
    for suffix in (".tbi", ".csi"):
        index = path.with_name(path.name + suffix)
        if index.exists() and index.stat().st_mtime < path.stat().st_mtime:
            log.warning("%s: index %s is older than the file; ignoring it and streaming",
                        path, index.name)
            return True
    return False


def _records(vf: pysam.VariantFile, panel: Panel, *, use_index: bool = True
             ) -> tuple[Iterator[Any], str]:
    """Records near panel sites: region fetches on an indexed file, else one streaming pass."""
    if not use_index or vf.index is None or not list(vf.header.contigs):
        return iter(vf), "stream"
    by_contig: dict[str, list[int]] = {}
    for s in panel.sites:
        by_contig.setdefault(s.chrom, []).append(s.pos)
    regions: list[tuple[str, int, int]] = []
    for chrom, positions in by_contig.items():
        name = _resolve_contig(chrom, vf)
        if name is None:
            log.warning("%s: panel contig %s is not in the file", vf.filename.decode(), chrom)
            continue
        positions.sort()
        start = prev = positions[0]
        for pos in positions[1:]:
            if pos - prev > FETCH_GAP:
                regions.append((name, start, prev))
                start = pos
            prev = pos
        regions.append((name, start, prev))

    def fetch() -> Iterator[Any]:
        for name, start, stop in regions:
            yield from vf.fetch(name, start - 1, stop)

    return fetch(), "region"


def _resolve_contig(chrom: str, vf: pysam.VariantFile) -> str | None:
    """The file's name for a panel contig (`chr1` or `1`, `chrM` or `MT`), if it has one."""
    norm = normalize_contig(chrom)
    for name in map(str, vf.header.contigs):
        if normalize_contig(name) == norm and name in vf.index:
            return name
    return None


class _Reader:
    """Accumulates dosages and per-site status as records stream past."""

    def __init__(self, panel: Panel, n_samples: int) -> None:
        self.sites = panel.sites
        self.dosage = np.full((n_samples, len(panel)), np.nan, dtype=np.float32)
        self.status = np.zeros(len(panel), dtype=np.int8)
        self.index: dict[tuple[str, int], list[int]] = {}
        for j, s in enumerate(panel.sites):
            self.index.setdefault((normalize_contig(s.chrom), s.pos), []).append(j)
        self.duplicates = 0
        self.haploid_calls = 0

    def add(self, rec: Any) -> None:
        """Use one record for every panel site it matches."""
        hits = self.index.get((normalize_contig(rec.chrom), rec.pos))
        if not hits:
            return
        alleles = tuple(a.upper() for a in rec.alleles)
        passed = all(f in ("PASS", ".") for f in rec.filter)  # empty = "."
        for j in hits:
            m = _match(self.sites[j], alleles)
            if m is None:
                continue
            if self.status[j] in (_MATCHED, _SWAPPED):
                self.duplicates += 1
                continue
            if not passed:
                self.status[j] = _FILTERED
                continue
            kind, alt_index = m
            self.dosage[:, j] = self._count(rec, alt_index)
            self.status[j] = kind

    def _count(self, rec: Any, alt_index: int | None) -> np.ndarray:
        out = np.empty(self.dosage.shape[0], dtype=np.float32)
        for i, sample in enumerate(rec.samples.values()):
            gt = sample.allele_indices
            if not gt or None in gt:
                out[i] = np.nan
                continue
            if len(gt) == 1:
                self.haploid_calls += 1
            out[i] = sum(a == alt_index for a in gt)
        return out

    def report(self, path: Path, build: str, access: str) -> dict[str, Any]:
        n = len(self.sites)
        matched = int((self.status == _MATCHED).sum())
        swapped = int((self.status == _SWAPPED).sum())
        used = np.isin(self.status, (_MATCHED, _SWAPPED))
        return {
            "file": str(path),
            "panel_sites": n,
            "matched": matched,
            "matched_swapped": swapped,
            "missing_absent": int((self.status == 0).sum()),
            "missing_filtered": int((self.status == _FILTERED).sum()),
            "missing_genotype": int(np.isnan(self.dosage[:, used]).sum()),
            "match_rate": (matched + swapped) / n,
            "samples": int(self.dosage.shape[0]),
            "build": build,
            "duplicate_records": self.duplicates,
            "haploid_calls": self.haploid_calls,
            "access": access,
        }


def _match(site: Site, alleles: tuple[str, ...]) -> tuple[int, int | None] | None:
    """(kind, GT index of the panel ALT) if a record with these alleles describes the site."""
    ref, alts = alleles[0], alleles[1:]
    if ref == site.ref:
        if site.alt in alts:
            return _MATCHED, alleles.index(site.alt)
        if not alts or alts == (".",):  # ALT=. : a reference call, zero copies of the ALT
            return _MATCHED, None
        return None
    if ref == site.alt and site.ref in alts:
        return _SWAPPED, 0
    return None
