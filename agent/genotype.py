"""Per-record genotype logic, free of I/O: allele matching in pgsc_calc's order, copies of the
panel's ALT in a genotype, filters per caller, GQ/DP thresholds, allele parsimony.

Everything here works on plain values (a `Call` is what a VCF record says at one position), so
it is tested without files. The rules are in ../shared/VCF_RULES.md (numbers in brackets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How the panel's alleles met the record's [16].
SAME, SWAPPED, FLIPPED, FLIPPED_SWAPPED = 1, 2, 3, 4
ALLELE_KINDS = {SAME: "same", SWAPPED: "swapped", FLIPPED: "flipped",
                FLIPPED_SWAPPED: "flipped_swapped"}
# ALT alleles that stand for "some allele other than those listed" [9]: Clair3/GATK and
# DeepVariant reference blocks; `.` (bcftools `call -g`, forced hom-ref calls) lists none.
SYMBOLIC = frozenset({"<NON_REF>", "<*>"})
NO_ALT = "."
# What a filter column means for the genotype [12].
KEEP, REFCALL, FAIL = 0, 1, 2
PASSING = frozenset({"PASS", "."})
# Why one sample's genotype at a used record gives no dosage (0: it gives one).
G_OK, G_NO_CALL, G_HALF_CALL, G_LOW_GQ, G_LOW_DP, G_UNKNOWN_ALLELE, G_FILTERED = range(7)
GENOTYPE_REASONS = {G_NO_CALL: "no_call", G_HALF_CALL: "half_call", G_LOW_GQ: "low_gq",
                    G_LOW_DP: "low_dp", G_UNKNOWN_ALLELE: "unknown_allele",
                    G_FILTERED: "genotype_filtered"}
_COMPLEMENT = str.maketrans("ACGT", "TGCA")
_AMBIGUOUS = frozenset({("A", "T"), ("T", "A"), ("C", "G"), ("G", "C")})

Genotype = tuple["int | None", ...]


@dataclass(frozen=True)
class Call:
    """What one record says: position, alleles, filters and per-sample GT, GQ and depth."""

    contig: str
    pos: int  # 1-based
    stop: int  # 1-based, inclusive: END of a reference block, else the last REF base
    alleles: tuple[str, ...]  # REF first, upper case
    filters: tuple[str, ...]  # () or ("PASS",) or the failing filters
    gts: tuple[Genotype, ...]  # allele indices per sample; None for a missing allele
    gq: tuple[int | None, ...]  # per sample; None where the record has no GQ
    dp: tuple[int | None, ...]  # per sample; None where the record has no depth
    ft: tuple[bool, ...] = ()  # per sample: FORMAT/FT names a failing filter [21]


@dataclass(frozen=True)
class Match:
    """A record describes a panel site: how the alleles met, and which GT index is the ALT."""

    kind: int
    target: int | None  # GT index holding the panel ALT; None: the record does not list it
    unknown: tuple[int, ...] = ()  # GT indices that might be the panel ALT (symbolic alleles)


def complement(allele: str) -> str:
    """Base-by-base complement of an allele (A<->T, C<->G)."""
    return allele.translate(_COMPLEMENT)


def is_ambiguous(ref: str, alt: str) -> bool:
    """A/T or C/G SNP: its strand cannot be told from its alleles."""
    return (ref, alt) in _AMBIGUOUS


def is_snv(ref: str, alt: str) -> bool:
    """Both alleles a single base."""
    return len(ref) == 1 and len(alt) == 1


def is_reference_only(alleles: Sequence[str]) -> bool:
    """A record that lists no real ALT: `.`, `<NON_REF>` or `<*>` only [9, 11]."""
    return all(a == NO_ALT or a in SYMBOLIC for a in alleles[1:])


def match_alleles(ref: str, alt: str, alleles: Sequence[str]) -> Match | None:
    """How a panel site (ref, alt) matches a record's alleles, in pgsc_calc's order: same,
    swapped, strand-flipped, flipped and swapped [16]. Ambiguous A/T and C/G SNPs are never
    flipped, and only SNVs are flipped at all. A record listing no real ALT (`.`, `<*>`,
    `<NON_REF>`) matches on REF alone [11]. None if the record is about other alleles."""
    if alleles[0] == ref and alt in alleles:  # the common case first (the panel has ref != alt)
        return Match(SAME, alleles.index(alt))
    orientations = [(SAME, ref, alt), (SWAPPED, alt, ref)]
    if is_snv(ref, alt) and not is_ambiguous(ref, alt):
        orientations += [(FLIPPED, complement(ref), complement(alt)),
                         (FLIPPED_SWAPPED, complement(alt), complement(ref))]
    rec_ref, alts = alleles[0], alleles[1:]
    ref_only = is_reference_only(alleles)
    symbolic = tuple(i for i, a in enumerate(alleles) if i and a in SYMBOLIC)
    for kind, want_ref, want_other in orientations:
        if rec_ref != want_ref or (ref_only and kind in (FLIPPED, FLIPPED_SWAPPED)):
            # A record without a real ALT says only its REF base; taking any base for either
            # strand would match every non-ambiguous SNV to every REF [11].
            continue
        swapped = kind in (SWAPPED, FLIPPED_SWAPPED)
        if want_other in alts:
            # Listed: a symbolic allele is then "anything else", never the panel ALT.
            return Match(kind, 0 if swapped else alts.index(want_other) + 1)
        if ref_only:
            # The panel ALT is REF when swapped; otherwise it is not listed, and a symbolic
            # allele in the genotype could be it.
            return Match(kind, 0) if swapped else Match(kind, None, symbolic)
    return None


def filter_kind(filters: Iterable[str]) -> int:
    """KEEP for PASS or `.`, REFCALL for DeepVariant/Clair3's `RefCall` (a 0/0 call), FAIL for
    anything else (`LowQual`, `NoCall`, ...) [12]."""
    failing = set(filters) - PASSING
    if not failing:
        return KEEP
    return REFCALL if failing == {"RefCall"} else FAIL


def genotype_filter_fails(value: object) -> bool:
    """True if a FORMAT/FT value names a failing filter; PASS, `.` and missing pass [21]."""
    if value is None:
        return False
    values = value if isinstance(value, tuple) else str(value).split(";")
    return any(v not in PASSING and v is not None for v in values)


def quality_reason(gq: int | None, dp: int | None, min_gq: int, min_dp: int) -> int:
    """G_LOW_GQ / G_LOW_DP if a threshold fails where the field exists, else G_OK [13]."""
    if min_gq > 0 and gq is not None and gq < min_gq:
        return G_LOW_GQ
    if min_dp > 0 and dp is not None and dp < min_dp:
        return G_LOW_DP
    return G_OK


def count_copies(gt: Genotype, target: int | None, unknown: tuple[int, ...] = ()
                 ) -> tuple[float, int, int]:
    """(copies of allele `target`, ploidy, reason) for one genotype; NaN with a reason for a
    no call, a half call (`0/.` is not hom-ref) or an allele that might be the target [14, 18].
    Phase is ignored; a haploid genotype gives 0 or 1."""
    ploidy = len(gt)
    if not ploidy or all(a is None for a in gt):
        return math.nan, ploidy, G_NO_CALL
    if None in gt:
        return math.nan, ploidy, G_HALF_CALL
    if unknown and any(a in unknown for a in gt):
        return math.nan, ploidy, G_UNKNOWN_ALLELE
    return float(sum(a == target for a in gt)), ploidy, G_OK


def reference_call(gt: Genotype) -> Genotype:
    """A `RefCall` genotype as the hom-ref call it is: every called allele becomes REF [12]."""
    return gt if None in gt else tuple(0 for _ in gt)


def is_parsimonious(alleles: Sequence[str]) -> bool:
    """False if the real alleles share a trimmable first or last base (an unnormalized indel,
    e.g. CAT>CGT); symbolic and missing alleles are left out [17]."""
    if len(alleles[0]) < 2:  # a one-base REF leaves nothing to trim
        return True
    real = [a for a in alleles if a and a[0] != "<" and a not in (NO_ALT, "*")]
    if len(real) < 2 or min(len(a) for a in real) < 2:
        return True
    return len({a[-1] for a in real}) > 1 and len({a[0] for a in real}) > 1
