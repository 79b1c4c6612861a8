"""Write small fixture VCF/BCF files for tests: text in, bgzipped + indexed file out."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pysam

CHR22_GRCH38 = 50_818_468


def vcf_text(rows: Iterable[str | Sequence[object]], samples: Sequence[str], *,
             contigs: Sequence[tuple[str, int | None]] = (("chr22", CHR22_GRCH38),),
             formats: Sequence[str] = ("GT",), filters: Sequence[str] = ("LowQual",)) -> str:
    """VCFv4.2 text; a row is a full data line or its fields from CHROM on."""
    header = ["##fileformat=VCFv4.2"]
    for name, length in contigs:
        header.append(f"##contig=<ID={name}>" if length is None
                      else f"##contig=<ID={name},length={length}>")
    header.append('##FILTER=<ID=PASS,Description="All filters passed">')
    header += [f'##FILTER=<ID={f},Description="{f}">' for f in filters]
    descriptions = {"GT": ("1", "String", "Genotype"), "DP": ("1", "Integer", "Depth"),
                    "GQ": ("1", "Integer", "Genotype quality")}
    for f in formats:
        number, typ, desc = descriptions[f]
        header.append(f'##FORMAT=<ID={f},Number={number},Type={typ},Description="{desc}">')
    columns = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
    if samples:
        columns += ["FORMAT", *samples]
    header.append("\t".join(columns))
    lines = [r if isinstance(r, str) else "\t".join(str(x) for x in r) for r in rows]
    return "\n".join(header + lines) + "\n"


def write_vcf(path: Path, text: str, *, compress: bool = True, index: bool = True) -> Path:
    """Write VCF text as plain `.vcf`, or bgzipped `.vcf.gz` (+ .tbi when `index`)."""
    path = Path(path)
    if not compress:
        path.write_text(text)
        return path
    plain = path.with_name(path.name.removesuffix(".gz") + ".tmp")
    plain.write_text(text)
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    if index:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def to_bcf(vcf: Path, bcf: Path, *, index: bool = True) -> Path:
    """Convert with bcftools (an independent writer) and optionally index the BCF."""
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(vcf)], check=True)
    if index:
        subprocess.run(["bcftools", "index", "-f", str(bcf)], check=True)
    return bcf


def bcftools_dosages(vcf: Path, sites: Sequence[tuple[str, int, str, str]]
                     ) -> dict[tuple[str, int, str, str], list[float]]:
    """ALT dosages per (chrom, pos, ref, alt) from `bcftools norm -m-` + `query`: the oracle."""
    split = subprocess.run(["bcftools", "norm", "-m-", "-Ov", str(vcf)], check=True,
                           capture_output=True, text=True).stdout
    query = subprocess.run(["bcftools", "query", "-f", "%CHROM\t%POS\t%REF\t%ALT\t%FILTER[\t%GT]\n",
                            "-"], input=split, check=True, capture_output=True,
                           text=True).stdout
    wanted = set(sites)
    out: dict[tuple[str, int, str, str], list[float]] = {}
    for line in query.splitlines():
        chrom, pos, ref, alt, filt, *gts = line.split("\t")
        key = (chrom, int(pos), ref, alt)
        if key not in wanted or key in out:
            continue
        ok = filt in ("PASS", ".")
        out[key] = [_gt_dosage(g) if ok else float("nan") for g in gts]
    return out


def _gt_dosage(gt: str) -> float:
    alleles = gt.replace("|", "/").split("/")
    if any(a == "." for a in alleles):
        return float("nan")
    return float(sum(a == "1" for a in alleles))
