"""The VCF reader against hand-written cases and against bcftools as an independent oracle."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from support.vcftools import bcftools_dosages, to_bcf, vcf_text, write_vcf

from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.vcf import Dosages, load_npz, read_dosages, save_npz
from genofed.errors import GenofedError
from genofed.models.panel import Panel, Site

NAN = float("nan")
SAMPLES = ("S1", "S2", "S3")


def make_panel(*sites: tuple[str, int, str, str], build: str = "GRCh38") -> Panel:
    """A panel of (chrom, pos, ref, alt) sites with af 0.3."""
    return Panel(build=build, sites=tuple(
        Site(chrom=c, pos=p, ref=r, alt=a, id=f"{c}_{p}_{r}_{a}", af=0.3) for c, p, r, a in sites))


# (record fields, panel site, expected dosages of S1..S3)
CASES = {
    "plain": (("chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/0", "0/1", "1/1"),
              ("chr22", 100, "A", "G"), (0, 1, 2)),
    "swapped": (("chr22", 200, ".", "C", "T", ".", "PASS", ".", "GT", "0/0", "0/1", "1/1"),
                ("chr22", 200, "T", "C"), (2, 1, 0)),
    "multi_second_alt": (("chr22", 300, ".", "A", "C,G", ".", "PASS", ".", "GT", "1/2", "2/2",
                          "0/1"), ("chr22", 300, "A", "G"), (1, 2, 0)),
    "multi_first_alt": (None, ("chr22", 300, "A", "C"), (1, 0, 1)),
    "missing_and_half": (("chr22", 400, ".", "G", "A", ".", "PASS", ".", "GT", "./.", "0/.",
                          "1|1"), ("chr22", 400, "G", "A"), (NAN, NAN, 2)),
    "filtered": (("chr22", 500, ".", "T", "C", "10", "LowQual", ".", "GT", "0/1", "1/1", "0/0"),
                 ("chr22", 500, "T", "C"), (NAN, NAN, NAN)),
    "absent": (None, ("chr22", 600, "C", "T"), (NAN, NAN, NAN)),
    "filter_dot_phased": (("chr22", 700, ".", "A", "T", ".", ".", ".", "GT", "0|1", "1|0", "1|1"),
                          ("chr22", 700, "A", "T"), (1, 1, 2)),
    "haploid": (("chr22", 800, ".", "C", "G", ".", "PASS", ".", "GT", "0", "1", "."),
                ("chr22", 800, "C", "G"), (0, 1, NAN)),
    "haploid_swapped": (("chr22", 900, ".", "G", "T", ".", "PASS", ".", "GT", "0", "1", "1/1"),
                        ("chr22", 900, "T", "G"), (1, 0, 0)),
    "allele_mismatch": (("chr22", 1000, ".", "G", "T", ".", "PASS", ".", "GT", "0/1", "1/1",
                         "0/0"), ("chr22", 1000, "G", "C"), (NAN, NAN, NAN)),
    "alt_dot_refcall": (("chr22", 1100, ".", "A", ".", ".", "PASS", ".", "GT", "0/0", "0/0",
                         "./."), ("chr22", 1100, "A", "C"), (0, 0, NAN)),
}
EXPECTED_REPORT = {"panel_sites": 12, "matched": 7, "matched_swapped": 2, "missing_absent": 1,
                   "missing_filtered": 1, "samples": 3, "build": "GRCh38"}


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CASES records as VCF.gz+tbi, plain VCF, BCF+csi and unindexed BCF."""
    d = tmp_path_factory.mktemp("cases")
    text = vcf_text([rec for rec, _, _ in CASES.values() if rec is not None], SAMPLES)
    gz = write_vcf(d / "calls.vcf.gz", text)
    write_vcf(d / "calls.vcf", text, compress=False)
    to_bcf(gz, d / "calls.bcf")
    to_bcf(gz, d / "noindex.bcf", index=False)
    return d


@pytest.fixture(scope="module")
def cases_panel() -> Panel:
    return make_panel(*(site for _, site, _ in CASES.values()))


@pytest.mark.parametrize("name", ["calls.vcf.gz", "calls.vcf", "calls.bcf", "noindex.bcf"])
def test_cases_every_format(cases_dir: Path, cases_panel: Panel, name: str) -> None:
    d = read_dosages(cases_dir / name, cases_panel, access_mode="region")
    expected = np.array([want for _, _, want in CASES.values()], dtype=np.float32).T
    np.testing.assert_array_equal(d.dosage, expected)
    assert d.dosage.dtype == np.float32
    assert d.samples == SAMPLES
    assert d.site_ids == tuple(cases_panel.ids)
    for key, value in EXPECTED_REPORT.items():
        assert d.report[key] == value, key
    assert d.report["match_rate"] == pytest.approx(9 / 12)
    assert d.report["missing"]["allele_mismatch"] == 1
    assert d.report["missing_genotype"] == 4  # ./., 0/., haploid . and the ALT=. ./.
    assert d.report["access"] == ("stream" if name in ("calls.vcf", "noindex.bcf")
                                  else "region")


def test_cases_agree_with_bcftools(cases_dir: Path, cases_panel: Panel) -> None:
    # bcftools norm -m- splits the multi-allelic record; its query is the independent oracle
    # for the non-swapped diploid cases (swapped, haploid and ALT=. are checked by hand).
    d = read_dosages(cases_dir / "calls.vcf.gz", cases_panel)
    keys = [(s.chrom, s.pos, s.ref, s.alt) for s in cases_panel.sites]
    oracle = bcftools_dosages(cases_dir / "calls.vcf.gz", keys)
    checked = 0
    for j, key in enumerate(keys):
        if key in oracle and key[1] not in (800, 900, 1100):
            np.testing.assert_array_equal(d.dosage[:, j], np.array(oracle[key], np.float32))
            checked += 1
    assert checked == 6


def test_random_multiallelic_against_bcftools(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    samples = [f"p{i:03d}" for i in range(40)]
    bases = np.array(list("ACGT"))
    rows, panel_sites = [], []
    for k in range(150):
        pos = 1000 + 37 * k
        alleles = rng.permutation(bases)[: rng.integers(2, 5)]
        n_alt = len(alleles) - 1
        gts = []
        for _ in samples:
            a = [str(x) for x in rng.integers(0, n_alt + 1, size=2)]
            if rng.random() < 0.05:
                a[rng.integers(0, 2)] = "."
            gts.append(("|" if rng.random() < 0.5 else "/").join(a))
        filt = "LowQual" if rng.random() < 0.1 else "PASS"
        rows.append(["chr22", pos, ".", alleles[0], ",".join(alleles[1:]), ".", filt, ".", "GT",
                     *gts])
        panel_sites.append(("chr22", pos, str(alleles[0]), str(rng.choice(alleles[1:]))))
    vcf = write_vcf(tmp_path / "r.vcf.gz", vcf_text(rows, samples))
    panel = make_panel(*panel_sites)
    d = read_dosages(vcf, panel)
    oracle = bcftools_dosages(vcf, panel_sites)
    expected = np.array([oracle[k] for k in panel_sites], dtype=np.float32).T
    np.testing.assert_array_equal(d.dosage, expected)
    assert d.report["missing_filtered"] > 0
    assert np.isnan(d.dosage).any() and (d.dosage == 2).any()


@pytest.mark.parametrize(("file_contig", "panel_contig", "length"), [
    ("22", "chr22", 50_818_468), ("chr22", "22", 50_818_468),
    ("MT", "chrM", 16_569), ("chrM", "MT", 16_569),
])
@pytest.mark.parametrize("indexed", [True, False])
def test_contig_aliases(tmp_path: Path, file_contig: str, panel_contig: str, length: int,
                        indexed: bool) -> None:
    text = vcf_text([[file_contig, 150, ".", "C", "T", ".", "PASS", ".", "GT", "0/1", "1/1",
                      "0/0"]], SAMPLES, contigs=[(file_contig, length)])
    vcf = write_vcf(tmp_path / "a.vcf.gz", text, index=indexed)
    for mode in ("auto", "region", "stream"):
        d = read_dosages(vcf, make_panel((panel_contig, 150, "C", "T")), access_mode=mode)
        np.testing.assert_array_equal(d.dosage[:, 0], [1, 2, 0])
        assert d.report["access"] == ("region" if indexed and mode == "region" else "stream")


def test_region_fetch_and_stream_agree_over_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    positions = [10_000 + 250_000 * k + int(rng.integers(0, 5)) for k in range(12)]
    rows = [["chr22", p, ".", "A", "G", ".", "PASS", ".", "GT",
             *(f"{rng.integers(0, 2)}|{rng.integers(0, 2)}" for _ in SAMPLES)] for p in positions]
    text = vcf_text(rows, SAMPLES)
    gz = write_vcf(tmp_path / "g.vcf.gz", text)
    plain = write_vcf(tmp_path / "g.vcf", text, compress=False)
    panel = make_panel(*(("chr22", p, "A", "G") for p in positions[::2]))
    region = read_dosages(gz, panel, access_mode="region")
    stream = read_dosages(plain, panel, access_mode="region")  # a plain .vcf cannot fetch
    assert region.report["access"] == "region" and stream.report["access"] == "stream"
    np.testing.assert_array_equal(region.dosage, stream.dosage)
    assert region.report["matched"] == 6


def test_stale_index_is_not_trusted(tmp_path: Path) -> None:
    rows = [["chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1", "1/1", "0/0"]]
    gz = write_vcf(tmp_path / "s.vcf.gz", vcf_text(rows, SAMPLES))
    panel = make_panel(("chr22", 100, "A", "G"))
    assert read_dosages(gz, panel, access_mode="region").report["access"] == "region"
    index = gz.with_name(gz.name + ".tbi")
    os.utime(index, (index.stat().st_atime, gz.stat().st_mtime - 60))
    d = read_dosages(gz, panel, access_mode="region")
    assert d.report["access"] == "stream" and d.report["index_stale"] is True
    np.testing.assert_array_equal(d.dosage[:, 0], [1, 2, 0])


def test_contig_without_length_is_unverified(tmp_path: Path) -> None:
    text = vcf_text([["chr22", 150, ".", "C", "T", ".", "PASS", ".", "GT", "0/1", "1/1", "0/0"]],
                    SAMPLES, contigs=[("chr22", None)])
    d = read_dosages(write_vcf(tmp_path / "a.vcf", text, compress=False),
                     make_panel(("chr22", 150, "C", "T")))
    assert d.report["build"] == "unverified"
    assert d.report["matched"] == 1


@pytest.mark.parametrize(("length", "words"), [(51_304_566, "GRCh37"),
                                                (50_818_469, "unknown length")])
def test_build_mismatch_is_an_error(tmp_path: Path, length: int, words: str) -> None:
    text = vcf_text([["chr22", 150, ".", "C", "T", ".", "PASS", ".", "GT", "0/1", "1/1", "0/0"]],
                    SAMPLES, contigs=[("chr22", length)])
    vcf = write_vcf(tmp_path / "b.vcf.gz", text)
    with pytest.raises(GenofedError, match=words) as info:
        read_dosages(vcf, make_panel(("chr22", 150, "C", "T")))
    assert str(vcf) in str(info.value)


def test_min_match_rate(tmp_path: Path) -> None:
    text = vcf_text([["chr22", 150, ".", "C", "T", ".", "PASS", ".", "GT", "0/1", "1/1", "0/0"]],
                    SAMPLES)
    vcf = write_vcf(tmp_path / "m.vcf.gz", text)
    panel = make_panel(("chr22", 150, "C", "T"), ("chr22", 250, "A", "G"))
    assert read_dosages(vcf, panel, min_match_rate=0.5).report["match_rate"] == 0.5
    with pytest.raises(GenofedError, match=r"match rate 0\.500 is below the minimum 0\.750"):
        read_dosages(vcf, panel, min_match_rate=0.75)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="not found") as info:
        read_dosages(tmp_path / "nope.vcf.gz", make_panel(("chr22", 1, "A", "G")))
    assert "nope.vcf.gz" in str(info.value)


@pytest.mark.parametrize("content", [b"hello\nworld\n", b"chrom\tpos\n", b"\x00\x01\x02binary"])
def test_not_a_vcf(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.vcf"
    bad.write_bytes(content)
    with pytest.raises(GenofedError, match="not a VCF/BCF") as info:
        read_dosages(bad, make_panel(("chr22", 1, "A", "G")))
    assert str(bad) in str(info.value)


def test_directory_is_not_a_vcf(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="directory"):
        read_dosages(tmp_path, make_panel(("chr22", 1, "A", "G")))


def test_no_samples(tmp_path: Path) -> None:
    vcf = write_vcf(tmp_path / "sites.vcf.gz",
                    vcf_text([["chr22", 100, ".", "A", "G", ".", "PASS", "."]], []))
    with pytest.raises(GenofedError, match="no samples"):
        read_dosages(vcf, make_panel(("chr22", 100, "A", "G")))


def test_no_gt_field(tmp_path: Path) -> None:
    text = vcf_text([["chr22", 100, ".", "A", "G", ".", "PASS", ".", "DP", "3", "4", "5"]],
                    SAMPLES, formats=["DP"])
    vcf = write_vcf(tmp_path / "dp.vcf.gz", text)
    with pytest.raises(GenofedError, match="GT"):
        read_dosages(vcf, make_panel(("chr22", 100, "A", "G")))


def test_truncated_bgzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = [["chr22", 100 + k, ".", "A", "G", ".", "PASS", ".", "GT",
             *(f"{rng.integers(0, 2)}|{rng.integers(0, 2)}" for _ in range(50))]
            for k in range(3000)]
    whole = write_vcf(tmp_path / "whole.vcf.gz",
                      vcf_text(rows, [f"s{i}" for i in range(50)]), index=False)
    cut = tmp_path / "cut.vcf.gz"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GenofedError, match="truncated") as info:
        read_dosages(cut, make_panel(("chr22", 2900, "A", "G")))
    assert str(cut) in str(info.value)


@pytest.mark.parametrize("compress", [True, False])
def test_corrupt_record(tmp_path: Path, compress: bool) -> None:
    text = vcf_text([["chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1", "1/1", "0/0"],
                     "chr22\tnotanumber\t.\tA\tG\t.\tPASS\t.\tGT\t0/1\t1/1\t0/0"], SAMPLES)
    vcf = write_vcf(tmp_path / ("c.vcf.gz" if compress else "c.vcf"), text, compress=compress,
                    index=False)  # streamed: the bad line is met while reading
    with pytest.raises(GenofedError, match="cannot read records") as info:
        read_dosages(vcf, make_panel(("chr22", 100, "A", "G")))
    assert str(vcf) in str(info.value)


def test_plain_gzip_is_read_with_a_warning(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """htslib reads plain gzip from start to end; so does genofed, saying how to bgzip it."""
    vcf = tmp_path / "g.vcf.gz"
    with gzip.open(vcf, "wt") as f:
        f.write(vcf_text([["chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1", "1/1",
                           "0/0"]], SAMPLES))
    d = read_dosages(vcf, make_panel(("chr22", 100, "A", "G")))
    assert d.dosage[:, 0].tolist() == [1, 2, 0] and d.report["access"] == "stream"
    assert "not bgzip" in caplog.text and str(vcf) in caplog.text


def test_npz_round_trip(tmp_path: Path) -> None:
    d = Dosages(dosage=np.array([[0, 1, np.nan], [2, np.nan, 1]], dtype=np.float32),
                samples=("a", "b"), site_ids=("x", "y", "z"), report={"matched": 3})
    save_npz(tmp_path / "d.npz", d)
    back = load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.dosage, d.dosage)
    assert (back.samples, back.site_ids, back.report) == (d.samples, d.site_ids, d.report)
    assert set(np.load(tmp_path / "d.npz").files) >= {"dosage", "site_ids", "samples"}


def test_load_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="not found"):
        load_npz(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(GenofedError, match=r"junk\.npz"):
        load_npz(tmp_path / "junk.npz")


# --- phenotypes (agent/phenotypes.py) ---------------------------------------------------------

def test_read_phenotypes(tmp_path: Path) -> None:
    f = tmp_path / "p.tsv"
    f.write_text("sample\tphenotype\nS1\t0\nS2\t1\n\nS3\t1\n")
    assert read_phenotypes(f) == {"S1": 0, "S2": 1, "S3": 1}


@pytest.mark.parametrize(("content", "words"), [
    ("", "header"),
    ("id\tlabel\nS1\t0\n", "header"),
    ("sample\tphenotype\n", "no samples"),
    ("sample\tphenotype\nS1\t2\n", ":2: phenotype of S1 must be 0 or 1"),
    ("sample\tphenotype\nS1\tcase\n", "must be 0 or 1"),
    ("sample\tphenotype\nS1\t0\t7\n", "expected 2"),
    ("sample\tphenotype\nS1\t0\nS1\t1\n", "duplicate sample S1"),
])
def test_read_phenotypes_errors(tmp_path: Path, content: str, words: str) -> None:
    f = tmp_path / "p.tsv"
    f.write_text(content)
    with pytest.raises(GenofedError, match=words) as info:
        read_phenotypes(f)
    assert str(f) in str(info.value)


def test_read_phenotypes_missing(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="not found"):
        read_phenotypes(tmp_path / "none.tsv")
