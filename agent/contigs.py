"""Contig names and genome builds: aliases (`1`<->`chr1`, `MT`<->`chrM`), the build a VCF
header's `##contig` lengths say, and the pseudo-autosomal regions of chrX."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

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
    base = name[3:] if name[:3].lower() == "chr" else name
    return "M" if base.upper() in ("M", "MT") else base


def in_par(build: str, contig: str, pos: int) -> bool:
    """True if 1-based `pos` on `contig` lies in a chrX pseudo-autosomal region of `build`."""
    if normalize_contig(contig) != "X":
        return False
    return any(lo <= pos <= hi for lo, hi in PAR_X.get(build, ()))


def header_build(build: str, contigs: Iterable[tuple[str, int | None]]) -> str:
    """`build` if some header contig length confirms it, "unverified" if none can; raises
    BuildMismatch naming the contig when a length contradicts it."""
    expected = CONTIG_LENGTHS.get(build, {})
    verified = False
    for name, length in contigs:
        norm = normalize_contig(name)
        if length is None or norm not in expected:
            continue
        if length == expected[norm]:
            verified = True
            continue
        others = [b for b, t in CONTIG_LENGTHS.items() if t.get(norm) == length]
        what = f"the {others[0]} length" if others else "an unknown length"
        raise BuildMismatch(f"contig {name} has length {length}, {what}; the panel is "
                            f"{build} ({expected[norm]}); no liftover is done")
    return build if verified else "unverified"


def resolve(panel_contig: str, names: Iterable[str]) -> str | None:
    """The file's own name for a panel contig (`chr1` or `1`, `chrM` or `MT`), if it has one."""
    norm = normalize_contig(panel_contig)
    for name in names:
        if normalize_contig(name) == norm:
            return name
    return None
