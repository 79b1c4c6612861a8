"""The variant panel: which sites a model reads, in which order, with their reference frequency.

File format (tab-separated, the project's own):

    #genome_build=GRCh38
    chrom	pos	ref	alt	id	af
    chr1	10177	A	AC	rs367896724	0.42

`pos` is 1-based, `ref` is the build's reference allele, `af` the frequency of `alt` in a
reference population (used to impute missing dosages as 2p, never the device's own samples).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.errors import LocalInputError, read_user_text
from genofed.models.builds import site_problem

COLUMNS = ("chrom", "pos", "ref", "alt", "id", "af")
KNOWN_BUILDS = ("GRCh37", "GRCh38")
_BASES = frozenset("ACGTN")


@dataclass(frozen=True)
class Site:
    chrom: str
    pos: int
    ref: str
    alt: str
    id: str
    af: float


@dataclass(frozen=True)
class Panel:
    """An ordered list of sites on one genome build.

    `ref_is_reference` says whether each site's `ref` is the build's reference allele (true of
    this project's format); a PGS Catalog score orders its alleles by effect instead, so a
    reference block cannot tell its dosage without the reference genome.
    """

    build: str
    sites: tuple[Site, ...]
    ref_is_reference: bool = True

    def __post_init__(self) -> None:
        if self.build not in KNOWN_BUILDS:
            raise LocalInputError(f"panel: unknown genome build {self.build!r} (want one of "
                                  f"{', '.join(KNOWN_BUILDS)})")
        if not self.sites:
            raise LocalInputError("panel: no sites")

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.sites]

    @property
    def af(self) -> np.ndarray:
        """Reference ALT allele frequency per site, float64, panel order."""
        return np.array([s.af for s in self.sites], dtype=np.float64)

    def to_tsv(self) -> str:
        lines = [f"#genome_build={self.build}", "\t".join(COLUMNS)]
        lines += [f"{s.chrom}\t{s.pos}\t{s.ref}\t{s.alt}\t{s.id}\t{s.af:.6g}" for s in self.sites]
        return "\n".join(lines) + "\n"

    def sha256(self) -> str:
        """Hash of the canonical TSV: what a bundle's manifest pins the panel by."""
        import hashlib  # here: reading a VCF never hashes its panel, and _hashlib costs ~5 ms

        return hashlib.sha256(self.to_tsv().encode()).hexdigest()


def load_panel(path: str | Path) -> Panel:
    """Read and validate a panel TSV; every error names the file and line."""
    p = Path(path)
    text = read_user_text(p, "panel file")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#genome_build="):
        raise LocalInputError(f"{p}:1: panel must start with '#genome_build=GRCh38' (or GRCh37)")
    build = lines[0].split("=", 1)[1].strip()
    if len(lines) < 2 or tuple(lines[1].split("\t")) != COLUMNS:
        raise LocalInputError(f"{p}:2: panel header must be the tab-separated columns "
                              f"{' '.join(COLUMNS)}")
    sites: list[Site] = []
    seen: dict[tuple[str, int, str, str], int] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        sites.append(_parse_site(p, lineno, line))
        problem = site_problem(build, sites[-1].chrom, sites[-1].pos)
        if problem is not None:  # the panel's own build says the site cannot exist [4]
            raise LocalInputError(f"{p}:{lineno}: {problem}")
        key = (sites[-1].chrom, sites[-1].pos, sites[-1].ref, sites[-1].alt)
        if key in seen:
            raise LocalInputError(f"{p}:{lineno}: duplicate site {key[0]}:{key[1]} "
                                  f"{key[2]}>{key[3]} (first at line {seen[key]})")
        seen[key] = lineno
    if not sites:
        raise LocalInputError(f"{p}: panel has no sites")
    try:
        return Panel(build=build, sites=tuple(sites))
    except LocalInputError as exc:
        raise LocalInputError(f"{p}:1: {exc}") from None


def _parse_site(path: Path, lineno: int, line: str) -> Site:
    fields = line.split("\t")
    where = f"{path}:{lineno}"
    if len(fields) != len(COLUMNS):
        raise LocalInputError(f"{where}: expected {len(COLUMNS)} tab-separated fields, "
                              f"got {len(fields)}")
    chrom, pos_s, ref, alt, sid, af_s = fields
    try:
        pos = int(pos_s)
        af = float(af_s)
    except ValueError:
        raise LocalInputError(f"{where}: pos must be an integer and af a number") from None
    if pos < 1:
        raise LocalInputError(f"{where}: pos must be >= 1 (1-based), got {pos}")
    if not 0.0 < af < 1.0:
        raise LocalInputError(f"{where}: af must lie strictly between 0 and 1, got {af}")
    for name, allele in (("ref", ref), ("alt", alt)):
        if not allele or not set(allele.upper()) <= _BASES:
            raise LocalInputError(f"{where}: {name} allele {allele!r} is not a sequence of ACGTN")
    if ref.upper() == alt.upper():
        raise LocalInputError(f"{where}: ref and alt are the same allele {ref!r}")
    return Site(chrom=chrom, pos=pos, ref=ref.upper(), alt=alt.upper(), id=sid, af=af)
