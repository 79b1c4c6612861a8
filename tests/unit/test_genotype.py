"""Pure per-record and per-site logic, without files: allele matching, counting, filters,
thresholds, parsimony, PAR, build check, the access plan, and the per-site state machine."""

from __future__ import annotations

import math

import pytest

from genofed.agent import access
from genofed.agent import genotype as g
from genofed.agent.contigs import BuildMismatch, header_build, in_par, normalize_contig
from genofed.agent.extract import Extraction, ReadOptions
from genofed.errors import GenofedError
from genofed.models.panel import Panel, Site


@pytest.mark.parametrize(("site", "alleles", "kind", "target"), [
    (("A", "G"), ("A", "G"), g.SAME, 1),
    (("A", "G"), ("G", "A"), g.SWAPPED, 0),
    (("A", "G"), ("T", "C"), g.FLIPPED, 1),
    (("A", "G"), ("C", "T"), g.FLIPPED_SWAPPED, 0),
    (("A", "G"), ("A", "C", "G"), g.SAME, 2),  # multi-allelic: the panel's own ALT
    (("A", "G"), ("G", "C", "A"), g.SWAPPED, 0),
    (("A", "G"), ("A",), g.SAME, None),  # ALT=. : a reference call [11]
    (("A", "G"), ("A", "<*>"), g.SAME, None),
    (("A", "G"), ("G", "<NON_REF>"), g.SWAPPED, 0),  # panel ALT is the genome's REF
    (("A", "G"), ("A", "G", "<NON_REF>"), g.SAME, 1),
    (("A", "T"), ("A", "T"), g.SAME, 1),  # ambiguous, same strand: kept
    (("A", "T"), ("T", "A"), g.SWAPPED, 0),  # a swap, never taken for a flip
    (("C", "G"), ("G", "C"), g.SWAPPED, 0),
    (("CA", "C"), ("CA", "C"), g.SAME, 1),
])
def test_match_alleles(site: tuple[str, str], alleles: tuple[str, ...], kind: int,
                       target: int | None) -> None:
    m = g.match_alleles(site[0], site[1], alleles)
    assert m is not None and (m.kind, m.target) == (kind, target)


@pytest.mark.parametrize(("site", "alleles"), [
    (("A", "G"), ("A", "C")),  # other ALT
    (("A", "G"), ("C", "G")),  # other REF
    (("A", "G"), ("T", "A")),  # neither orientation, nor flipped
    (("CA", "C"), ("GT", "G")),  # indels are never flipped
    (("CA", "C"), ("CAT", "CT")),  # unnormalized representation of the same deletion
])
def test_no_match(site: tuple[str, str], alleles: tuple[str, ...]) -> None:
    assert g.match_alleles(site[0], site[1], alleles) is None


def test_symbolic_allele_in_gt_is_unknown_only_when_alt_is_not_listed() -> None:
    m = g.match_alleles("A", "G", ("A", "<NON_REF>"))
    assert m is not None and m.unknown == (1,)
    assert math.isnan(g.count_copies((0, 1), m.target, m.unknown)[0])
    assert g.count_copies((0, 0), m.target, m.unknown) == (0.0, 2, g.G_OK)
    listed = g.match_alleles("A", "G", ("A", "G", "<NON_REF>"))
    assert listed is not None and listed.unknown == ()
    assert g.count_copies((1, 2), listed.target, listed.unknown)[0] == 1.0


@pytest.mark.parametrize(("gt", "target", "want"), [
    ((0, 1), 1, (1.0, 2, g.G_OK)), ((1, 1), 1, (2.0, 2, g.G_OK)),
    ((1, 2), 2, (1.0, 2, g.G_OK)), ((2, 2), 1, (0.0, 2, g.G_OK)),
    ((1,), 1, (1.0, 1, g.G_OK)), ((0,), 0, (1.0, 1, g.G_OK)),
    ((0, 0), None, (0.0, 2, g.G_OK)),
])
def test_count_copies(gt: tuple[int, ...], target: int | None,
                      want: tuple[float, int, int]) -> None:
    assert g.count_copies(gt, target) == want


@pytest.mark.parametrize(("gt", "reason"), [
    ((None, None), g.G_NO_CALL), ((None,), g.G_NO_CALL), ((), g.G_NO_CALL),
    ((0, None), g.G_HALF_CALL), ((None, 1), g.G_HALF_CALL),  # 0/. is not hom-ref [14]
])
def test_missing_genotypes_stay_missing(gt: tuple[int | None, ...], reason: int) -> None:
    d, _, why = g.count_copies(gt, 1)
    assert math.isnan(d) and why == reason


def test_filters_per_caller() -> None:
    assert g.filter_kind(()) == g.KEEP and g.filter_kind(("PASS",)) == g.KEEP
    assert g.filter_kind(("RefCall",)) == g.REFCALL
    for failing in (("LowQual",), ("NoCall",), ("RefCall", "LowQual"), ("q10",)):
        assert g.filter_kind(failing) == g.FAIL
    assert g.reference_call((1, 1)) == (0, 0) and g.reference_call((0, None)) == (0, None)


def test_quality_thresholds_only_where_fields_exist() -> None:
    assert g.quality_reason(None, None, 20, 10) == g.G_OK
    assert g.quality_reason(19, 30, 20, 10) == g.G_LOW_GQ
    assert g.quality_reason(30, 9, 20, 10) == g.G_LOW_DP
    assert g.quality_reason(0, 0, 0, 0) == g.G_OK


@pytest.mark.parametrize(("alleles", "ok"), [
    (("A", "G"), True), (("CA", "C"), True), (("C", "CA"), True), (("AC", "GT"), True),
    (("CAT", "CGT"), False), (("CAT", "CT"), False), (("CA", "CAA"), False),
    (("A", "<NON_REF>"), True), (("AT", "GC", "<*>"), True),
])
def test_parsimony(alleles: tuple[str, ...], ok: bool) -> None:
    assert g.is_parsimonious(alleles) is ok


def test_contigs_par_and_build() -> None:
    assert [normalize_contig(c) for c in ("chr1", "1", "MT", "chrM", "chrX")] == \
        ["1", "1", "M", "M", "X"]
    assert in_par("GRCh38", "chrX", 2_781_479) and not in_par("GRCh38", "chrX", 2_781_480)
    assert in_par("GRCh38", "X", 155_701_383) and not in_par("GRCh38", "chr1", 100)
    assert in_par("GRCh37", "X", 60_001) and not in_par("GRCh37", "X", 60_000)
    assert header_build("GRCh38", [("chr1", 248_956_422)]) == "GRCh38"
    assert header_build("GRCh38", [("chr1", None), ("scaffold", 5)]) == "unverified"
    with pytest.raises(BuildMismatch, match="GRCh37"):
        header_build("GRCh38", [("1", 249_250_621)])


def test_access_plan() -> None:
    assert access.merge([1, 2, 50, 200], 10) == [(1, 2), (50, 50), (200, 200)]
    dense = access.Density(records=1_000_000, bp_per_record=50)
    few = access.plan({"chr1": [1_000_000 * k for k in range(1, 20)]}, dense)
    assert few.mode == "region" and len(few.regions) == 19
    every = access.plan({"chr1": list(range(1, 50_000_000, 100))}, dense)
    assert every.mode == "stream"
    assert access.plan({"chr1": [5]}, None).mode == "stream"
    assert access.estimate_density(1, 100, 10_000, 5, 5) is None
    est = access.estimate_density(1000, 10_000, 1_000_000, 1, 50_001)
    assert est is not None and est.records == pytest.approx(100_000)


def _panel(*sites: tuple[int, str, str], ref_is_reference: bool = True) -> Panel:
    return Panel("GRCh38", tuple(Site("chr22", p, r, a, f"s{p}", 0.3) for p, r, a in sites),
                 ref_is_reference=ref_is_reference)


def _call(pos: int, alleles: tuple[str, ...], gts: tuple[tuple[int | None, ...], ...],
          filters: tuple[str, ...] = (), stop: int | None = None,
          gq: int | None = None) -> g.Call:
    n = len(gts)
    return g.Call("chr22", pos, stop or pos, alleles, filters, gts, (gq,) * n, (None,) * n)


def test_extraction_precedence_and_report() -> None:
    panel = _panel((100, "A", "G"), (150, "C", "T"), (160, "CA", "C"), (300, "G", "A"),
                   (400, "T", "C"))
    ex = Extraction(panel, 2, ReadOptions(min_match_rate=0.0, min_gq=20))
    block = _call(90, ("A", "<*>"), ((0, 0), (0, 0)), stop=200, gq=40)
    ex.add_block(block, ex.index.within("22", 91, 200))
    ex.add_record(_call(100, ("A", "G"), ((0, 1), (1, 1)), gq=50), [0])  # record beats block
    ex.add_record(_call(100, ("A", "G"), ((0, 0), (0, 0)), gq=50), [0])  # a duplicate
    ex.add_record(_call(300, ("G", "A"), ((0, 1), (1, 1)), gq=10), [3])  # GQ below 20
    ex.add_record(_call(400, ("T", "C"), ((0, 1), (1, 1)), filters=("LowQual",)), [4])
    assert ex.dosage.tolist()[0][:2] == [1.0, 0.0] and ex.dosage.tolist()[1][:2] == [2.0, 0.0]
    r = ex.report()
    assert r["duplicate_records"] == 1
    assert r["matched_by_evidence"]["record"] == 1 and r["matched_by_evidence"]["ref_block"] == 1
    assert r["missing"]["indel_without_record"] == 1  # the block does not cover the indel
    assert r["missing"]["low_quality"] == 1 and r["missing"]["filtered"] == 1
    assert r["match_rate"] == pytest.approx(2 / 5)


def test_drop_ambiguous() -> None:
    panel = _panel((100, "A", "T"), (200, "A", "G"))
    for drop, want in ((False, 1), (True, 0)):
        ex = Extraction(panel, 1, ReadOptions(drop_ambiguous=drop))
        ex.add_record(_call(100, ("A", "T"), ((0, 1),)), [0])
        r = ex.report()
        assert r["ambiguous_matched"] == want and r["ambiguous_dropped"] == 1 - want
        assert r["missing"]["ambiguous"] == 1 - want


def test_block_needs_the_reference_allele_for_scoring_panels() -> None:
    panel = _panel((150, "G", "A"), ref_is_reference=False)  # effect A, other G
    ex = Extraction(panel, 1, ReadOptions())
    ex.add_block(_call(100, ("C", "<*>"), ((0, 0),), stop=200), [0])
    assert math.isnan(float(ex.dosage[0, 0]))
    assert ex.report()["missing"]["reference_allele_unknown"] == 1


def test_read_options_are_validated() -> None:
    for bad in ({"min_match_rate": 1.5}, {"min_gq": -1}, {"min_depth": 2.5}):
        with pytest.raises(GenofedError):
            ReadOptions(**bad)  # type: ignore[arg-type]


def test_haploid_calls_and_par() -> None:
    panel = Panel("GRCh38", (Site("chrX", 100_000, "A", "G", "par", 0.3),
                             Site("chrX", 5_000_000, "C", "T", "nonpar", 0.3)))
    ex = Extraction(panel, 1, ReadOptions())
    ex.add_record(g.Call("chrX", 100_000, 100_000, ("A", "G"), (), ((1,),), (None,), (None,)),
                  [0])
    ex.add_record(g.Call("chrX", 5_000_000, 5_000_000, ("T", "C"), (), ((0,),), (None,),
                         (None,)), [1])  # swapped haploid: 1 - d
    assert ex.dosage.tolist() == [[1.0, 1.0]] and ex.ploidy.tolist() == [[1, 1]]
    r = ex.report()
    assert r["ploidy"] == {"diploid": 0, "haploid": 2, "haploid_in_par": 1}


def test_terminal_bar_only_on_a_terminal() -> None:
    import io

    from genofed.cli.progress import TerminalBar, terminal_bar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert terminal_bar("x", stream=io.StringIO()) is None
    assert terminal_bar("x", stream=Tty(), enabled=False) is None
    out = Tty()
    bar = terminal_bar("reading", stream=out)
    assert isinstance(bar, TerminalBar)
    bar(0.5)
    bar(1.0)
    bar.close()
    assert "reading [" in out.getvalue() and "100.0%" in out.getvalue()
    assert out.getvalue().endswith("\n")
