"""Contig names and genome builds: aliases (`1`<->`chr1`, `MT`<->`chrM`), the build a VCF
header's `##contig` lengths say, and the pseudo-autosomal regions of chrX."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from genofed.models import builds
from genofed.models.builds import CONTIG_LENGTHS

__all__ = ["CONTIG_LENGTHS", "BuildMismatch", "header_build", "in_par", "normalize_contig",
           "resolve"]

# chrX pseudo-autosomal regions (1-based, inclusive): PAR1 and PAR2 per build.
PAR_X: dict[str, tuple[tuple[int, int], ...]] = {
    "GRCh38": ((10_001, 2_781_479), (155_701_383, 156_030_895)),
    "GRCh37": ((60_001, 2_699_520), (154_931_044, 155_260_560)),
}


class BuildMismatch(ValueError):
    """A header contig's length belongs to another build (or to none known)."""


@lru_cache(maxsize=4096)
def normalize_contig(name: str) -> str:
    """Contig name without a `chr` prefix, with `MT` written `M`: `chr1`->`1`, `MT`->`M`."""
    return builds.normalize_contig(name)


def in_par(build: str, contig: str, pos: int) -> bool:
    """True if 1-based `pos` on `contig` lies in a chrX pseudo-autosomal region of `build`."""
    if normalize_contig(contig) != "X":
        return False
    return any(lo <= pos <= hi for lo, hi in PAR_X.get(build, ()))


def header_build(build: str, contigs: Iterable[tuple[str, int | None]],
                 names: Iterable[str] = ()) -> str:
    """`build` if some header contig length confirms it, "unverified" if none can [4]; raises
    BuildMismatch naming the contig when a length contradicts it or its name exists only in
    another build, or naming the line when a `##reference`/`##assembly` value (`names`)
    points to another build. The mitochondrion's length is left out: hg19's chrM (16,571 bp)
    is not GRCh37's MT, yet the nuclear contigs agree."""
    contigs = list(contigs)
    expected = CONTIG_LENGTHS.get(build, {})
    verified = False
    for name, length in contigs:
        norm = normalize_contig(name)
        if length is None or norm not in expected or norm == "M":
            continue
        if length == expected[norm]:
            verified = True
            continue
        others = [b for b, t in CONTIG_LENGTHS.items() if t.get(norm) == length]
        what = f"the {others[0]} length" if others else "an unknown length"
        raise BuildMismatch(f"contig {name} has length {length}, {what}; the panel is "
                            f"{build} ({expected[norm]}); no liftover is done")
    if verified:
        return build
    for name, _ in contigs:
        named = builds.contig_build(name)
        if named is not None and named != build:
            raise BuildMismatch(f"contig {name} exists only in {named}; the panel is {build}; "
                                f"no liftover is done")
    for line in names:
        named = builds.named_build(line)
        if named is not None and named != build:
            raise BuildMismatch(f"header line {line.strip()!r} names {named}; the panel is "
                                f"{build}; no liftover is done")
    return "unverified"


def resolve(panel_contig: str, names: Iterable[str]) -> str | None:
    """The file's own name for a panel contig (`chr1` or `1`, `chrM` or `MT`), if it has one."""
    norm = normalize_contig(panel_contig)
    for name in names:
        if normalize_contig(name) == norm:
            return name
    return None
