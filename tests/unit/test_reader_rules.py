"""The reader on what real public files do (issue 15), one test per case the issue found: files
without `##contig` lines, GT not first in FORMAT, split multi-allelics in either order, an
index made for another file, FORMAT/FT, the REF of `ALT=.` spans, headers that cannot verify
the build, and panels whose sites their own build does not have. Files are real bgzipped,
tabix-indexed VCFs read with pysam; bcftools is the oracle where it reads the same thing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_genofed
from support.vcftools import bcftools_dosages, vcf_text, write_vcf

from genofed.agent.vcf import read_dosages
from genofed.errors import LocalInputError
from genofed.models.panel import Panel, Site, load_panel
from genofed.models.pgs import load_pgs

NAN = float("nan")
FT_HEADER = '##FORMAT=<ID=FT,Number=1,Type=String,Description="Genotype filter">\n'
END_HEADER = '##INFO=<ID=END,Number=1,Type=Integer,Description="End position">\n'


def panel_of(*sites: tuple[str, int, str, str], build: str = "GRCh38") -> Panel:
    return Panel(build, tuple(Site(c, p, r, a, f"{c}_{p}_{r}_{a}", 0.3) for c, p, r, a in sites))


def with_header(text: str, lines: str) -> str:
    """VCF text with extra meta lines after ##fileformat."""
    head, rest = text.split("\n", 1)
    return f"{head}\n{lines}{rest}"


def test_file_without_contig_lines_is_read_and_says_the_build_is_not_verified(
        tmp_path: Path) -> None:
    """1000 Genomes-era files have no ##contig lines; htslib and bcftools read them [4]."""
    rows = [("22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1", "1/1"),
            ("22", 200, ".", "C", "T", ".", "PASS", ".", "GT", "1|1", "0|0")]
    vcf = write_vcf(tmp_path / "old.vcf.gz", vcf_text(rows, ("S1", "S2"), contigs=()))
    panel = tmp_path / "panel.tsv"
    panel.write_text(panel_of(("chr22", 100, "A", "G"), ("chr22", 200, "C", "T")).to_tsv())
    for access in ("stream", "region"):
        out, report = tmp_path / f"{access}.npz", tmp_path / f"{access}.json"
        done = run_genofed("features", "--panel", str(panel), "--vcf", str(vcf), "-o", str(out),
                           "--report", str(report), "--access", access)
        assert done.returncode == 0, done.stderr
        assert "build not verified: no contig lengths" in done.stderr
        r = json.loads(report.read_text())
        assert r["build"] == "unverified"
        assert r["build_evidence"].startswith("build not verified: no contig lengths")
        from genofed.agent.vcf import load_npz

        np.testing.assert_array_equal(load_npz(out).dosage, [[1, 2], [2, 0]])


@pytest.mark.parametrize("samples", [("S1",), ("S1", "S2", "S3")])
def test_gt_anywhere_in_format_is_read_as_bcftools_reads_it(tmp_path: Path,
                                                            samples: tuple[str, ...]) -> None:
    """Complete Genomics-style FORMAT with GT not first: pysam gives no genotype there [22]."""
    calls = ["30:1/1", "5:0/1", "9:./."][:len(samples)]
    rows = [("chr22", 100, ".", "A", "G", ".", "PASS", ".", "GQ:GT", *calls),
            ("chr22", 150, ".", "C", "A,T", ".", "PASS", ".", "GQ:GT",
             *["40:1|2", "3:2/2", "7:0/."][:len(samples)])]
    vcf = write_vcf(tmp_path / "cg.vcf.gz", vcf_text(rows, samples, formats=("GQ", "GT")))
    sites = [("chr22", 100, "A", "G"), ("chr22", 150, "C", "T"), ("chr22", 150, "C", "A")]
    d = read_dosages(vcf, panel_of(*sites), min_match_rate=0)
    want = bcftools_dosages(vcf, sites)
    np.testing.assert_array_equal(d.dosage, np.array([want[s] for s in sites]).T)
    assert d.report["missing"]["no_call"] == 0
    assert d.report["gt_not_first_records"] == 2


def test_a_gt_allele_past_the_records_alleles_is_never_a_dosage(tmp_path: Path) -> None:
    """`0/3` on a biallelic record: htslib reads the index past the alleles as missing, so
    the call is a counted missing one, never 0 copies of the ALT (a silent wrong dosage)."""
    rows = [("chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/3")]
    vcf = write_vcf(tmp_path / "bad.vcf.gz", vcf_text(rows, ("s1",), formats=("GT",)))
    d = read_dosages(vcf, panel_of(("chr22", 100, "A", "G")), min_match_rate=0)
    assert np.isnan(d.dosage[0, 0]) and d.report["missing"]["no_call"] == 1


@pytest.mark.parametrize("order", ["insertion_first", "deletion_first"])
def test_exact_allele_match_wins_whatever_the_record_order(tmp_path: Path, order: str) -> None:
    """Split multi-allelic records at one position: the exact (REF, ALT) match decides [17]."""
    ins = ("chr22", 100, ".", "T", "TA", ".", "PASS", ".", "GT", "0/1")
    dele = ("chr22", 100, ".", "TA", "T", ".", "PASS", ".", "GT", "1/1")
    rows = [ins, dele] if order == "insertion_first" else [dele, ins]
    vcf = write_vcf(tmp_path / "split.vcf.gz", vcf_text(rows, ("S1",)))
    d = read_dosages(vcf, panel_of(("chr22", 100, "TA", "T"), ("chr22", 100, "T", "TA")),
                     min_match_rate=0)
    np.testing.assert_array_equal(d.dosage, [[2, 1]])  # the deletion 1/1, the insertion 0/1
    assert d.report["matched"] == 2 and d.report["matched_swapped"] == 0


def test_exact_failed_record_is_not_replaced_by_a_swapped_pass(tmp_path: Path) -> None:
    rows = [("chr22", 100, ".", "TA", "T", ".", "LowQual", ".", "GT", "1/1"),
            ("chr22", 100, ".", "T", "TA", ".", "PASS", ".", "GT", "0/1")]
    vcf = write_vcf(tmp_path / "split.vcf.gz", vcf_text(rows, ("S1",)))
    d = read_dosages(vcf, panel_of(("chr22", 100, "TA", "T")), min_match_rate=0)
    assert np.isnan(d.dosage[0, 0]) and d.report["missing"]["filtered"] == 1


def _foreign_index(tmp_path: Path) -> tuple[Path, Panel]:
    """A file whose .tbi was made for another file that starts with the same records."""
    def rows(n: int, start: int, step: int, alleles: tuple[str, str], gt: str
             ) -> list[tuple[object, ...]]:
        return [("chr22", start + k * step, ".", *alleles, ".", "PASS", ".", "GT", gt)
                for k in range(n)]
    other = write_vcf(tmp_path / "other.vcf.gz",
                      vcf_text(rows(60_000, 100, 1, ("A", "G"), "0/1"), ("S1",)))
    mine = write_vcf(tmp_path / "mine.vcf.gz",
                     vcf_text(rows(2_500, 100, 1, ("A", "G"), "0/1")
                              + rows(3_000, 100_000, 3, ("C", "T"), "1/1"), ("S1",)),
                     index=False)
    shutil.copy(str(other) + ".tbi", str(mine) + ".tbi")  # newer than the file: not stale
    return mine, panel_of(*[("chr22", 100_000 + k * 3, "C", "T") for k in range(0, 3000, 300)])


def _poisoned_index(tmp_path: Path) -> tuple[Path, Panel]:
    """An index whose offsets lead htslib into a failed read (once: `Closing failed`)."""
    def rows(n: int, step: int, off: int, gt: str) -> list[tuple[object, ...]]:
        return [("chr22", k * step + off, ".", "C", "T", ".", "PASS", ".", "GT", gt)
                for k in range(1, n)]
    big = write_vcf(tmp_path / "big.vcf.gz", vcf_text(rows(60_000, 10, 0, "0/1"), ("S1",)))
    mine = write_vcf(tmp_path / "mine2.vcf.gz", vcf_text(rows(60_000, 10, 3, "1/1"), ("S1",)),
                     index=False)
    shutil.copy(str(big) + ".tbi", str(mine) + ".tbi")
    return mine, panel_of(*[("chr22", k * 10 + 3, "C", "T") for k in (5, 10_000, 50_000)])


@pytest.mark.parametrize("make", [_foreign_index, _poisoned_index])
@pytest.mark.parametrize("access", ["auto", "region"])
def test_index_of_another_file_is_named_and_not_used(tmp_path: Path, make: object,
                                                     access: str) -> None:
    vcf, panel = make(tmp_path)  # type: ignore[operator]
    p = tmp_path / "panel.tsv"
    p.write_text(panel.to_tsv())
    out = tmp_path / "o.npz"
    done = run_genofed("features", "--panel", str(p), "--vcf", str(vcf), "-o", str(out),
                       "--access", access, "--min-match-rate", "0")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"index {vcf.name}.tbi does not find" in done.stderr
    from genofed.agent.vcf import load_npz

    d = load_npz(out)
    assert d.report["access"] == "stream"
    np.testing.assert_array_equal(d.dosage, np.full((1, len(panel)), 2.0))


def test_format_ft_is_a_filter_with_its_reason_counted(tmp_path: Path) -> None:
    """GATK genotype filters and Complete Genomics' VQLOW make that call missing [21]."""
    rows = [("chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT:FT", "1/1:VQLOW", "0/1:PASS",
             "1/1:."),
            ("chr22", 200, ".", "C", "T", ".", "PASS", ".", "GT:FT", "0/1:DP125;DP130",
             "1/1:VQLOW", "0/1:VQLOW")]
    vcf = write_vcf(tmp_path / "ft.vcf.gz",
                    with_header(vcf_text(rows, ("S1", "S2", "S3")), FT_HEADER))
    d = read_dosages(vcf, panel_of(("chr22", 100, "A", "G"), ("chr22", 200, "C", "T")),
                     min_match_rate=0)
    np.testing.assert_array_equal(d.dosage, [[NAN, NAN], [1, NAN], [2, NAN]])
    # per genotype, at sites with a dosage; per site, where every call failed
    assert d.report["missing_genotype_by_reason"]["genotype_filtered"] == 1
    assert d.report["missing"]["filtered"] == 1  # every call of the second site failed


def test_ref_of_an_alt_dot_record_is_checked_against_the_panel(tmp_path: Path) -> None:
    """`ALT=.` says only its REF: a REF that is neither panel allele is an allele mismatch,
    at the record's position and inside a REF written out over several bases [11]."""
    rows = [("chr22", 100, ".", "C", ".", ".", "PASS", ".", "GT", "0/0"),
            ("chr22", 300, ".", "GTAC", ".", ".", "PASS", "END=303", "GT", "0/0")]
    vcf = write_vcf(tmp_path / "dot.vcf.gz", with_header(vcf_text(rows, ("S1",)), END_HEADER))
    sites = [("chr22", 100, "A", "G"),  # REF C: neither A nor its strand partner
             ("chr22", 301, "T", "G"),  # span base T: hom-ref, 0 copies of G
             ("chr22", 302, "C", "A"),  # span base A: the panel's ALT, 2 copies
             ("chr22", 303, "G", "T")]  # span base C: a mismatch
    d = read_dosages(vcf, panel_of(*sites), min_match_rate=0)
    np.testing.assert_array_equal(d.dosage, [[NAN, 0, 2, NAN]])
    assert d.report["missing"]["allele_mismatch"] == 2
    assert d.report["strand_flips"] == 0


GRCH37_ROWS = [("chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1"),
               ("chr22", 51_000_000, ".", "C", "T", ".", "PASS", ".", "GT", "1/1")]


@pytest.mark.parametrize("access", ["stream", "region"])
def test_record_past_the_builds_contig_end_refuses_an_unverified_file(tmp_path: Path,
                                                                      access: str) -> None:
    """A GRCh37 file (chr22 is 51.3 Mb) without contig lengths against a GRCh38 panel (chr22
    ends at 50,818,468): the position past the end is the evidence [4]."""
    vcf = write_vcf(tmp_path / "b37.vcf.gz",
                    vcf_text(GRCH37_ROWS, ("S1",), contigs=(("chr22", None),)))
    with pytest.raises(LocalInputError, match=re.escape("chr22:51000000: a record past the "
                                                        "end of chr22 in GRCh38")):
        read_dosages(vcf, panel_of(("chr22", 100, "A", "G")), min_match_rate=0,
                     access_mode=access)


def test_reference_line_naming_another_build_refuses(tmp_path: Path) -> None:
    text = with_header(vcf_text(GRCH37_ROWS[:1], ("S1",), contigs=()),
                       "##reference=file:///ref/human_g1k_v37.fasta\n")
    vcf = write_vcf(tmp_path / "g1k.vcf.gz", text)
    with pytest.raises(LocalInputError, match=re.escape("human_g1k_v37.fasta' names GRCh37; "
                                                        "the panel is GRCh38")):
        read_dosages(vcf, panel_of(("chr22", 100, "A", "G")), min_match_rate=0)
    d = read_dosages(vcf, panel_of(("chr22", 100, "A", "G"), build="GRCh37"))
    assert d.report["build_evidence"] == (
        "build not verified: no contig lengths; the header names GRCh37 "
        "(##reference=file:///ref/human_g1k_v37.fasta); no record past a GRCh37 contig end")


PANEL_HEAD = "#genome_build=GRCh38\nchrom\tpos\tref\talt\tid\taf\nchr22\t100\tA\tG\ta\t0.2\n"


@pytest.mark.parametrize(("line", "words"), [
    ("chr22\t51000000\tC\tT\tb\t0.2", "position chr22:51000000 is past the end of chr22 in "
                                      "GRCh38 (50,818,468 bp)"),
    ("chrUn_KI270742v1\t100\tC\tT\tb\t0.2", "contig chrUn_KI270742v1 is not a chromosome of "
                                            "GRCh38"),
])
def test_panel_sites_are_checked_against_the_panels_build(tmp_path: Path, line: str,
                                                          words: str) -> None:
    p = tmp_path / "panel.tsv"
    p.write_text(PANEL_HEAD + line + "\n")
    with pytest.raises(LocalInputError, match=re.escape(f"{p}:4: {words}")):
        load_panel(p)
    pgs = tmp_path / "score.txt"
    chrom, pos = line.split("\t")[:2]
    pgs.write_text("###PGS CATALOG SCORING FILE\n#genome_build=GRCh38\n"
                   "chr_name\tchr_position\teffect_allele\tother_allele\teffect_weight\t"
                   "allelefrequency_effect\n"
                   f"22\t100\tG\tA\t0.5\t0.2\n{chrom}\t{pos}\tT\tC\t0.1\t0.3\n")
    with pytest.raises(LocalInputError, match=re.escape(f"{pgs}:5: ")):
        load_pgs(pgs)


def test_plain_gzip_is_read_and_its_advice_leads_to_an_indexable_file(tmp_path: Path) -> None:
    """htslib reads a plain-gzip VCF from start to end (pysam cannot open one); genofed does
    too, and says how to make it indexable; what that advice makes reads the same [2, 4]."""
    import gzip

    rows = [("22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1")]
    gz = tmp_path / "plain.vcf.gz"
    with gzip.open(gz, "wt") as f:
        f.write(vcf_text(rows, ("S1",), contigs=()))
    panel = tmp_path / "panel.tsv"
    panel.write_text(panel_of(("chr22", 100, "A", "G")).to_tsv())
    done = run_genofed("features", "--panel", str(panel), "--vcf", str(gz),
                       "-o", str(tmp_path / "o.npz"))
    assert done.returncode == 0, done.stderr
    assert re.search(r"zcat \S+ \| bgzip > fixed\.vcf\.gz", done.stderr)
    assert "build not verified: no contig lengths" in done.stderr
    fixed = tmp_path / "fixed.vcf.gz"
    subprocess.run(f"zcat {gz} | bgzip > {fixed} && tabix -p vcf {fixed}", shell=True,
                   check=True)
    for path in (gz, fixed):
        d = read_dosages(path, panel_of(("chr22", 100, "A", "G")))
        assert d.dosage.tolist() == [[1.0]] and d.report["build"] == "unverified"


def test_a_full_panel_is_streamed_and_the_index_counts_the_records(tmp_path: Path) -> None:
    """A panel of every record: its regions cover the whole file, and a region read costs
    more a record than a stream; the plan streams (it fetched before, twice as slow)."""
    from genofed.agent import access
    from genofed.agent.plan import _index_summary

    rows = [("chr22", 1000 + 7 * k, ".", "A", "G", ".", "PASS", ".", "GT", "0/1")
            for k in range(5000)]
    vcf = write_vcf(tmp_path / "all.vcf.gz", vcf_text(rows, ("S1",)))
    summary = _index_summary(Path(str(vcf) + ".tbi"))
    assert summary is not None and summary[1] == 5000
    d = read_dosages(vcf, panel_of(*[(r[0], r[1], "A", "G") for r in rows]))
    assert d.report["access"] == "stream"
    dense = access.Density(records=10_000, bp_per_record=87)  # 1000 Genomes chr22, 5 samples
    every = list(range(50_300_000, 50_300_000 + 87 * 10_000, 87))
    assert access.plan({"22": every}, dense).mode == "stream"
    assert access.plan({"22": every[::1000]}, dense).mode == "region"


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_index_is_named_and_not_used(tmp_path: Path, damage: str) -> None:
    rows = [("chr22", 1000 + 7 * k, ".", "A", "G", ".", "PASS", ".", "GT", "1/1")
            for k in range(5000)]
    vcf = write_vcf(tmp_path / "d.vcf.gz", vcf_text(rows, ("S1",)))
    tbi = Path(str(vcf) + ".tbi")
    data = tbi.read_bytes()
    tbi.write_bytes({"empty": b"", "garbage": bytes(range(256)) * 8,
                     "truncated": data[: len(data) // 2]}[damage])
    p = tmp_path / "panel.tsv"
    p.write_text(panel_of(("chr22", 1000, "A", "G"), ("chr22", 1000 + 7 * 4000, "A", "G"))
                 .to_tsv())
    out = tmp_path / "o.npz"
    done = run_genofed("features", "--panel", str(p), "--vcf", str(vcf), "-o", str(out),
                       "--access", "region")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "d.vcf.gz.tbi" in done.stderr
    from genofed.agent.vcf import load_npz

    d = load_npz(out)
    assert d.report["access"] == "stream" and d.dosage.tolist() == [[2.0, 2.0]]


@pytest.mark.parametrize(("contig", "build", "refused"), [
    ("chrUn_KI270742v1", "GRCh37", "exists only in GRCh38"),
    ("hs37d5", "GRCh38", "exists only in GRCh37"),
    ("chrUn_gl000220", "GRCh38", "exists only in GRCh37"),
    ("chrUn_KI270742v1", "GRCh38", None),
])
def test_contig_names_of_one_build_are_evidence(tmp_path: Path, contig: str, build: str,
                                                refused: str | None) -> None:
    """Without lengths, a contig only one build has says which build the file is on [4]."""
    rows = [("chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1")]
    vcf = write_vcf(tmp_path / "n.vcf.gz", vcf_text(rows, ("S1",), contigs=(
        ("chr22", None), (contig, None))))
    panel = panel_of(("chr22", 100, "A", "G"), build=build)
    if refused:
        with pytest.raises(LocalInputError, match=f"contig {contig} {refused}; the panel is "
                                                  f"{build}"):
            read_dosages(vcf, panel)
    else:
        d = read_dosages(vcf, panel)
        assert d.report["build"] == "unverified" and f"contig {contig}" in \
            d.report["build_evidence"]
