"""Genome builds: contig lengths of GRCh37 and GRCh38, the build a reference or assembly name
points to (`##reference=.../human_g1k_v37.fasta` is GRCh37), and whether a site fits its build.

Free of I/O: the panel loaders and the VCF reader ask these questions of what they have read.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Contig lengths per build, keyed by contig name without "chr" (MT as "M").
CONTIG_LENGTHS: dict[str, dict[str, int]] = {
    "GRCh38": {
        "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259,
        "6": 170805979, "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422,
        "11": 135086622, "12": 133275309, "13": 114364328, "14": 107043718, "15": 101991189,
        "16": 90338345, "17": 83257441, "18": 80373285, "19": 58617616, "20": 64444167,
        "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415, "M": 16569,
    },
    "GRCh37": {
        "1": 249250621, "2": 243199373, "3": 198022430, "4": 191154276, "5": 180915260,
        "6": 171115067, "7": 159138663, "8": 146364022, "9": 141213431, "10": 135534747,
        "11": 135006516, "12": 133851895, "13": 115169878, "14": 107349540, "15": 102531392,
        "16": 90354753, "17": 81195210, "18": 78077248, "19": 59128983, "20": 63025520,
        "21": 48129895, "22": 51304566, "X": 155270560, "Y": 59373566, "M": 16569,
    },
}

# Names that reference FASTAs and assemblies of each build go by, as they appear in
# `##reference=` / `##assembly=` lines (lower case; matched as whole words).
_BUILD_NAMES = {
    "GRCh38": ("grch38", "hg38", "hs38", "hs38dh", "b38", "gca_000001405.15"),
    "GRCh37": ("grch37", "hg19", "b37", "hs37d5", "human_g1k_v37", "g1k_v37",
               "gca_000001405.1"),
    "NCBI36": ("ncbi36", "hg18", "b36", "human_b36"),
}
_NAME_RE = {build: re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(n) for n in names)
                              + r")(?![a-z0-9])")
            for build, names in _BUILD_NAMES.items()}


# Contig names that exist in one build only: GRCh38's KI270... scaffolds and hs38DH's HLA and
# decoy contigs; GRCh37's hs37d5 decoy and hg19's lower-case chrUn_gl000... names. (GL000...
# accessions are left out: Ensembl's GRCh38 keeps some of them.)
_CONTIG_BUILD = (
    (re.compile(r"(^|_)KI27\d{4}(v\d|\.\d)|^HLA-|^chrUn_JTFH|^hs38d1", re.IGNORECASE),
     "GRCh38"),
    (re.compile(r"^hs37d5$|(^|_)gl0\d{5}(_random)?$"), "GRCh37"),
)


def contig_build(name: str) -> str | None:
    """The build a contig's name belongs to when only one build has it, else None."""
    for rx, build in _CONTIG_BUILD:
        if rx.search(name):
            return build
    return None


def normalize_contig(name: str) -> str:
    """Contig name without a `chr` prefix, with `MT` written `M`: `chr1`->`1`, `MT`->`M`."""
    base = name[3:] if name[:3].lower() == "chr" else name
    return "M" if base.upper() in ("M", "MT") else base


def named_build(text: str) -> str | None:
    """The build a reference/assembly name points to (GRCh37, GRCh38 or NCBI36), None if it
    names none or several."""
    low = text.lower()
    found = {build for build, rx in _NAME_RE.items() if rx.search(low)}
    return found.pop() if len(found) == 1 else None


@lru_cache(maxsize=1024)
def contig_length(build: str, chrom: str) -> int | None:
    """Length of `chrom` (any alias) in `build`; None if the build lacks it, 0 for a build
    whose contigs are not known here."""
    lengths = CONTIG_LENGTHS.get(build)
    return 0 if lengths is None else lengths.get(normalize_contig(chrom))


def site_problem(build: str, chrom: str, pos: int) -> str | None:
    """Why a 1-based position cannot lie on `build` (unknown contig, past its end), or None."""
    length = contig_length(build, chrom)
    if length == 0 or (length is not None and pos <= length):
        return None
    if length is None:
        return (f"contig {chrom} is not a chromosome of {build} (want 1-22, X, Y or MT, with or "
                f"without chr)")
    if pos > length:
        return f"position {chrom}:{pos} is past the end of {chrom} in {build} ({length:,} bp)"
    return None


def past_end(build: str, chrom: str, pos: int) -> bool:
    """True if `pos` lies past the end of `chrom` in `build` (False for unknown contigs)."""
    length = CONTIG_LENGTHS.get(build, {}).get(normalize_contig(chrom))
    return length is not None and pos > length
