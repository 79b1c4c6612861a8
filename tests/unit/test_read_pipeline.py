"""The reader against the truth, on calls made by real tools from simulated long reads
(tests/make_read_calls.py: msprime haplotypes -> PBSIM -> minimap2 -> bcftools, variant-only,
gVCF and forced at the panel). Wherever the caller's own genotype is right, the reader's is;
the reader never invents a genotype the caller did not write; uncovered sites stay missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.make_read_calls import ReadCalls, make_read_calls, missing_tools

from genofed.agent.vcf import Dosages, read_dosages
from genofed.models.panel import Panel, load_panel

pytest.importorskip("msprime")


@pytest.fixture(scope="session")
def calls(tmp_path_factory: pytest.TempPathFactory) -> ReadCalls:
    """Reads simulated, aligned and called once per test session (about 15 s)."""
    lacking = missing_tools()
    if lacking:
        pytest.skip(f"needs {', '.join(lacking)} (apt-get install pbsim minimap2 samtools "
                    f"bcftools tabix; `make system-deps` does it)")
    return make_read_calls(tmp_path_factory.mktemp("reads"))


def caller_dosages(vcf: Path, panel: Panel) -> np.ndarray:
    """The caller's own genotype at each panel site, as copies of the panel ALT, read with
    bcftools from the record (or reference block) overlapping it; NaN where none is."""
    sites = vcf.with_name(vcf.name + ".sites.tsv")
    sites.write_text("".join(f"{s.chrom}\t{s.pos}\n" for s in panel.sites))
    out = subprocess.run(["bcftools", "query", "-R", str(sites), "--regions-overlap", "1",
                          "-f", "%POS\t%END\t%REF\t%ALT\t%FILTER[\t%GT]\n", str(vcf)],
                         check=True, capture_output=True, text=True).stdout
    index = {s.pos: j for j, s in enumerate(panel.sites)}
    found = np.full(len(panel), np.nan)
    for line in out.splitlines():
        pos_s, end_s, ref, alt, filt, gt = line.split("\t")
        pos = int(pos_s)
        end = int(end_s) if end_s != "." else pos
        alleles = [ref, *alt.split(",")]
        for p in range(pos, end + 1):
            j = index.get(p)
            if j is None or filt not in ("PASS", "."):
                continue
            s = panel.sites[j]
            called = gt.replace("|", "/").split("/")
            if "." in called:
                continue
            if p == pos and ref == s.ref and s.alt in alleles:
                found[j] = sum(a == str(alleles.index(s.alt)) for a in called)
            elif alt == "." and called == ["0", "0"]:  # ALT=. record or block: hom-ref
                found[j] = 0.0
    return found


def check_against_truth(d: Dosages, calls: ReadCalls, caller: np.ndarray) -> int:
    """Assert the pipeline properties; return how many sites the reader called right."""
    got = d.dosage[0]
    observed = ~np.isnan(got)
    # Never a genotype the caller did not write, and always the one it wrote.
    assert not (observed & np.isnan(caller)).any()
    np.testing.assert_array_equal(got[observed], caller[observed])
    # Wherever the caller's genotype agrees with the truth, so does the reader's.
    right = observed & (caller == calls.truth)
    np.testing.assert_array_equal(got[right], calls.truth[right])
    # Absent uncovered sites are missing, never 0.
    assert calls.uncovered.sum() >= 10
    assert np.isnan(got[calls.uncovered]).all()
    return int(right.sum())


@pytest.mark.parametrize("kind", ["variant_vcf", "gvcf", "forced_vcf"])
def test_reader_follows_the_caller_and_the_truth(calls: ReadCalls, kind: str) -> None:
    panel = load_panel(calls.panel)
    vcf: Path = getattr(calls, kind)
    caller = caller_dosages(vcf, panel)
    for access in ("stream", "region"):
        d = read_dosages(vcf, panel, min_match_rate=0.0, access_mode=access)
        right = check_against_truth(d, calls, caller)
        covered = int((~calls.uncovered).sum())
        if kind == "variant_vcf":  # only the sites where the sample carries an ALT
            assert right == int((~np.isnan(caller)).sum()) > 0
            assert d.report["missing"]["absent"] == len(panel) - right
        else:
            assert right >= 0.9 * covered
            gap_reason = "no_coverage" if kind == "gvcf" else "absent"
            assert d.report["missing"][gap_reason] >= int(calls.uncovered.sum())
        if kind == "gvcf":
            assert d.report["matched_by_evidence"]["ref_block"] > 0 and d.report["gvcf"]


def test_absent_sites_resolved_by_read_depth(calls: ReadCalls) -> None:
    panel = load_panel(calls.panel)
    d = read_dosages(calls.variant_vcf, panel, min_match_rate=0.0, bam=calls.bam,
                     min_depth=10)
    got = d.dosage[0]
    variant = read_dosages(calls.variant_vcf, panel, min_match_rate=0.0).dosage[0]
    by_depth = np.isnan(variant) & ~np.isnan(got)
    assert d.report["matched_by_evidence"]["bam_depth"] == int(by_depth.sum()) > 50
    assert (got[by_depth] == 0).all()
    # 0/0 only where the reads agree: hets the caller missed have ALT reads and stay missing.
    np.testing.assert_array_equal(got[by_depth], calls.truth[by_depth])
    assert np.isnan(got[calls.uncovered]).all()
    assert d.report["missing"]["no_coverage"] >= int(calls.uncovered.sum())


def test_absent_sites_resolved_by_callable_regions(calls: ReadCalls) -> None:
    panel = load_panel(calls.panel)
    d = read_dosages(calls.variant_vcf, panel, min_match_rate=0.0,
                     callable_bed=calls.callable_bed)
    got = d.dosage[0]
    assert d.report["matched_by_evidence"]["callable_bed"] > 50
    assert np.isnan(got[calls.uncovered]).all()
    assert d.report["missing"]["no_coverage"] >= int(calls.uncovered.sum())
    # A callable site with no call is 0/0: right unless the caller missed a variant there.
    forced = caller_dosages(calls.forced_vcf, panel)
    by_bed = ~np.isnan(got) & np.isnan(caller_dosages(calls.variant_vcf, panel))
    agree = forced[by_bed] == calls.truth[by_bed]
    np.testing.assert_array_equal(got[by_bed][agree], calls.truth[by_bed][agree])
