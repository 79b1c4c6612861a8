"""PGS Catalog scoring files as panels, so a device can read the sites of a published score.

A scoring file (format 2.0, plain or gzipped) has `#key=value` header lines (`#genome_build=`,
and `#HmPOS_build=` when harmonized) and tab-separated columns. Positions come from `hm_chr` /
`hm_pos` on the `HmPOS_build` when the file is harmonized, else `chr_name` / `chr_position` on
`genome_build` (hg19/hg38 are read as GRCh37/GRCh38; a build not reported is an error: the VCF
could not be checked against it).

Each row becomes a Site with `alt` = the effect allele and `ref` = the other allele, so a
dosage is the number of copies of the effect allele; the other allele is not necessarily the
genome's reference, so the panel says `ref_is_reference=False` (reference blocks then need the
reference FASTA). `af` is the effect allele's frequency: the `allelefrequency_effect` column
when the file has it, else taken from a frequency file (`af_file`: tab-separated with columns
chrom, pos, ref, alt, af among others, af being the frequency of alt; a genofed panel TSV is
one). Without either the score is refused: imputation needs a reference frequency, never the
device's own samples.

Rows that cannot be read as a biallelic site are left out with a warning naming how many:
not harmonized (empty hm_pos), no other allele, interaction/haplotype/diplotype terms, and
alleles that are not sequences of ACGT.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.errors import LocalInputError, read_user_text
from genofed.models.builds import site_problem
from genofed.models.panel import KNOWN_BUILDS, Panel, Site, load_panel

log = logging.getLogger(__name__)

MAGIC = "###PGS CATALOG SCORING FILE"
BUILD_ALIASES = {"GRCh37": "GRCh37", "hg19": "GRCh37", "GRCh38": "GRCh38", "hg38": "GRCh38"}
_BASES = frozenset("ACGT")
_FLAGS = ("is_interaction", "is_haplotype", "is_diplotype")


@dataclass(frozen=True)
class Score:
    """A scoring file as a panel (ALT = effect allele) with the effect weight of each site."""

    panel: Panel
    weights: np.ndarray  # float64 [sites], panel order
    pgs_id: str
    skipped: dict[str, int]


def is_pgs_file(path: Path) -> bool:
    """True if the file looks like a PGS Catalog scoring file (magic line or its columns)."""
    try:
        for line in _lines(path):
            if line.startswith(MAGIC):
                return True
            if not line.startswith("#"):
                return "effect_allele" in line.split("\t")
    except LocalInputError:
        return False
    return False


def load_panel_file(path: str | Path, *, af_file: str | Path | None = None) -> Panel:
    """A panel from either format: a PGS Catalog scoring file, or the project's TSV."""
    p = Path(path)
    if p.exists() and is_pgs_file(p):
        return load_pgs(p, af_file=af_file).panel
    if af_file is not None:
        raise LocalInputError(f"{p}: --af-file is for PGS Catalog scoring files; this panel "
                              f"carries its own af column")
    return load_panel(p)


def load_pgs(path: str | Path, *, af_file: str | Path | None = None) -> Score:
    """Read a PGS Catalog scoring file; every error names the file (and line)."""
    p = Path(path)
    meta: dict[str, str] = {}
    columns: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(_lines(p), start=1):
        if columns is None:
            if line.startswith("#"):
                key, _, value = line.lstrip("#").partition("=")
                if value:
                    meta[key.strip()] = value.strip()
                continue
            if not line.strip():
                continue
            columns = line.split("\t")
            continue
        if line.strip():
            rows.append((lineno, line.split("\t")))
    if columns is None:
        raise LocalInputError(f"{p}: no column header line; not a PGS Catalog scoring file")
    col = {name: i for i, name in enumerate(columns)}
    harmonized = "hm_pos" in col and "hm_chr" in col
    chrom_c, pos_c = ("hm_chr", "hm_pos") if harmonized else ("chr_name", "chr_position")
    build_key = "HmPOS_build" if harmonized else "genome_build"
    for needed in (chrom_c, pos_c, "effect_allele", "effect_weight"):
        if needed not in col:
            raise LocalInputError(f"{p}: scoring file has no {needed} column (needs chr_name, "
                                  f"chr_position or hm_chr, hm_pos; effect_allele; effect_weight)")
    raw_build = meta.get(build_key, "NR")
    build = BUILD_ALIASES.get(raw_build)
    if build is None:
        raise LocalInputError(f"{p}: #{build_key}={raw_build}: need a genome build of "
                              f"{', '.join(KNOWN_BUILDS)} (or hg19/hg38) to check VCFs against")
    freqs = _read_af_file(Path(af_file)) if af_file is not None else None
    if "allelefrequency_effect" not in col and freqs is None:
        raise LocalInputError(f"{p}: no allelefrequency_effect column; give the effect allele "
                              f"frequencies with --af-file (columns chrom pos ref alt af; a "
                              f"genofed panel TSV works)")
    sites: list[Site] = []
    weights: list[float] = []
    skipped = {"not_harmonized": 0, "no_other_allele": 0, "not_a_site": 0,
               "non_acgt_allele": 0}
    seen: dict[tuple[str, int, str, str], int] = {}
    for lineno, f in rows:
        where = f"{p}:{lineno}"
        if len(f) != len(columns):
            raise LocalInputError(f"{where}: expected {len(columns)} tab-separated fields, "
                                  f"got {len(f)}")
        if any(f[col[k]].strip().lower() == "true" for k in _FLAGS if k in col):
            skipped["not_a_site"] += 1
            continue
        chrom, pos_s = f[col[chrom_c]].strip(), f[col[pos_c]].strip()
        if not chrom or not pos_s:
            skipped["not_harmonized"] += 1
            continue
        effect = f[col["effect_allele"]].strip().upper()
        other = _other_allele(f, col)
        if not other:
            skipped["no_other_allele"] += 1
            continue
        if not set(effect) <= _BASES or not set(other) <= _BASES or not effect or \
                effect == other:
            skipped["non_acgt_allele"] += 1
            continue
        try:
            pos = int(pos_s)
            weight = float(f[col["effect_weight"]])
        except ValueError:
            raise LocalInputError(f"{where}: {pos_c} must be an integer and effect_weight a "
                                  f"number") from None
        if pos < 1 or not math.isfinite(weight):
            raise LocalInputError(f"{where}: bad {pos_c} {pos} or effect_weight {weight}")
        problem = site_problem(build, chrom, pos)
        if problem is not None:  # the score's own build says the site cannot exist [4]
            raise LocalInputError(f"{where}: {problem}")
        af = _effect_af(where, f, col, freqs, chrom, pos, other, effect)
        site_key = (chrom, pos, other, effect)
        if site_key in seen:
            raise LocalInputError(f"{where}: duplicate site {chrom}:{pos} {other}>{effect} "
                                  f"(first at line {seen[site_key]})")
        seen[site_key] = lineno
        rsid = f[col["rsID"]].strip() if "rsID" in col else ""
        if not rsid and "hm_rsID" in col:
            rsid = f[col["hm_rsID"]].strip()
        sites.append(Site(chrom=chrom, pos=pos, ref=other, alt=effect,
                          id=rsid or f"{chrom}:{pos}:{other}:{effect}", af=af))
        weights.append(weight)
    if any(skipped.values()):
        log.warning("%s: left out %s", p, ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    if not sites:
        raise LocalInputError(f"{p}: scoring file has no usable sites")
    panel = Panel(build=build, sites=tuple(sites), ref_is_reference=False)
    return Score(panel=panel, weights=np.array(weights, dtype=np.float64),
                 pgs_id=meta.get("pgs_id", p.name), skipped=skipped)


def _other_allele(f: list[str], col: dict[str, int]) -> str:
    """The other allele, or the harmonizer's inferred one when it is a single allele."""
    other = f[col["other_allele"]].strip().upper() if "other_allele" in col else ""
    if not other and "hm_inferOtherAllele" in col:
        inferred = f[col["hm_inferOtherAllele"]].strip().upper()
        if inferred and "/" not in inferred:
            other = inferred
    return other


def _effect_af(where: str, f: list[str], col: dict[str, int],
               freqs: dict[tuple[str, int, str, str], float] | None, chrom: str, pos: int,
               other: str, effect: str) -> float:
    """Frequency of the effect allele: the file's column, else the frequency file."""
    if "allelefrequency_effect" in col:
        text = f[col["allelefrequency_effect"]].strip()
        try:
            af = float(text)
        except ValueError:
            af = math.nan
        if 0.0 < af < 1.0:
            return af
        if freqs is None:
            raise LocalInputError(f"{where}: allelefrequency_effect {text!r} must lie strictly "
                                  f"between 0 and 1 (or give --af-file)")
    assert freqs is not None
    norm = _norm(chrom)
    if (norm, pos, other, effect) in freqs:
        return freqs[(norm, pos, other, effect)]
    if (norm, pos, effect, other) in freqs:
        return 1.0 - freqs[(norm, pos, effect, other)]
    raise LocalInputError(f"{where}: no frequency for {chrom}:{pos} {other}>{effect} in the "
                          f"--af-file")


def _read_af_file(path: Path) -> dict[tuple[str, int, str, str], float]:
    """{(contig, pos, ref, alt): frequency of alt} from a TSV with those columns."""
    lines = [ln for ln in read_user_text(path, "frequency file").splitlines()
             if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise LocalInputError(f"{path}: frequency file is empty")
    col = {name: i for i, name in enumerate(lines[0].split("\t"))}
    missing = [c for c in ("chrom", "pos", "ref", "alt", "af") if c not in col]
    if missing:
        raise LocalInputError(f"{path}: frequency file needs the columns chrom pos ref alt af "
                              f"(missing {' '.join(missing)})")
    out: dict[tuple[str, int, str, str], float] = {}
    for i, line in enumerate(lines[1:], start=2):
        f = line.split("\t")
        try:
            af = float(f[col["af"]])
            key = (_norm(f[col["chrom"]]), int(f[col["pos"]]),
                   f[col["ref"]].upper(), f[col["alt"]].upper())
        except (ValueError, IndexError):
            raise LocalInputError(f"{path}: data line {i}: bad pos or af") from None
        if not 0.0 < af < 1.0:
            raise LocalInputError(f"{path}: data line {i}: af must lie strictly between 0 and 1")
        out[key] = af
    return out


def _norm(contig: str) -> str:
    """Contig without `chr`, MT as M (as genofed.agent.contigs.normalize_contig)."""
    base = contig[3:] if contig[:3].lower() == "chr" else contig
    return "M" if base.upper() in ("M", "MT") else base


def _lines(path: Path) -> Iterator[str]:
    """Lines of a plain or gzipped text file, without line ends."""
    try:
        with path.open("rb") as fb:
            gz = fb.read(2) == b"\x1f\x8b"
        if gz:
            with gzip.open(path, "rt") as f:
                text = f.read()
        else:
            text = read_user_text(path, "scoring file")
    except FileNotFoundError:
        raise LocalInputError(f"{path}: scoring file not found") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise LocalInputError(f"{path}: cannot read scoring file: {exc}") from None
    yield from (ln.rstrip("\r") for ln in text.splitlines())
