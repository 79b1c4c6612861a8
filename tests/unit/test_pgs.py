"""PGS Catalog scoring files as panels: the same sites give the same dosages as the project's
panel format (copies of the effect allele), and bad files give one line naming them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import run_genofed

from genofed.agent.vcf import load_npz, read_dosages
from genofed.errors import GenofedError
from genofed.models.panel import Panel, load_panel
from genofed.models.pgs import is_pgs_file, load_panel_file, load_pgs

MAGIC = ("###PGS CATALOG SCORING FILE - see https://www.pgscatalog.org/downloads/#dl_ftp_scoring"
         " for additional information")
HARMONIZED_HEAD = MAGIC + """
#format_version=2.0
##POLYGENIC SCORE (PGS) INFORMATION
#pgs_id=PGS999999
#pgs_name=genofed_test
#trait_reported=Simulated trait
#genome_build=GRCh37
#variants_number={n}
#weight_type=beta
##HARMONIZATION DETAILS
#HmPOS_build=GRCh38
#HmPOS_date=2024-01-01
"""
HM_COLUMNS = ("rsID", "chr_name", "chr_position", "effect_allele", "other_allele",
              "effect_weight", "allelefrequency_effect", "hm_source", "hm_rsID", "hm_chr",
              "hm_pos", "hm_inferOtherAllele")


def harmonized(panel: Panel, *, effect_is_alt: np.ndarray) -> str:
    """A harmonized scoring file of the panel's sites; GRCh37 author positions are junk on
    purpose (the harmonized ones must be used)."""
    rows = []
    for s, alt_effect in zip(panel.sites, effect_is_alt, strict=True):
        effect, other = (s.alt, s.ref) if alt_effect else (s.ref, s.alt)
        af = s.af if alt_effect else 1 - s.af
        chrom = s.chrom.removeprefix("chr")  # the cohort spans every autosome
        rows.append("\t".join([s.id, chrom, str(s.pos + 7), effect, other, "0.01",
                               f"{af:.6g}", "ENSEMBL", s.id, chrom, str(s.pos), ""]))
    return (HARMONIZED_HEAD.format(n=len(rows)) + "\t".join(HM_COLUMNS) + "\n"
            + "\n".join(rows) + "\n")


def test_pgs_and_panel_give_the_same_dosages(cohort: Path, tmp_path: Path) -> None:
    panel = load_panel(cohort / "panel.tsv")
    vcf = cohort / "devices" / "dev00" / "calls.vcf.gz"
    flip = np.arange(len(panel)) % 3 == 0  # a third of the scores weight the REF allele
    pgs = tmp_path / "PGS999999_hmPOS_GRCh38.txt.gz"
    with gzip.open(pgs, "wt") as f:
        f.write(harmonized(panel, effect_is_alt=~flip))
    score = load_pgs(pgs)
    assert score.panel.build == "GRCh38" and not score.panel.ref_is_reference
    assert len(score.panel) == len(panel) and score.pgs_id == "PGS999999"
    np.testing.assert_allclose(score.panel.af, np.where(flip, 1 - panel.af, panel.af), atol=1e-6)
    base = read_dosages(vcf, panel)
    mine = read_dosages(vcf, score.panel)
    np.testing.assert_array_equal(mine.dosage[:, ~flip], base.dosage[:, ~flip])
    np.testing.assert_array_equal(mine.dosage[:, flip], 2 - base.dosage[:, flip])
    assert mine.report["matched_swapped"] == int(flip.sum())
    assert np.isnan(base.dosage).any()  # the cohort's missing calls stay missing in both


def test_cli_reads_both_formats_alike(cohort: Path, tmp_path: Path) -> None:
    panel = load_panel(cohort / "panel.tsv")
    vcf = cohort / "devices" / "dev01" / "calls.vcf.gz"
    pgs = tmp_path / "score.txt"
    pgs.write_text(harmonized(panel, effect_is_alt=np.ones(len(panel), dtype=bool)))
    outs = []
    for name, p in (("tsv", cohort / "panel.tsv"), ("pgs", pgs)):
        out = tmp_path / f"{name}.npz"
        done = run_genofed("features", "--panel", str(p), "--vcf", str(vcf), "-o", str(out))
        assert done.returncode == 0, done.stderr
        outs.append(load_npz(out))
    np.testing.assert_array_equal(outs[0].dosage, outs[1].dosage)
    assert outs[0].site_ids == outs[1].site_ids


def test_author_positions_with_a_frequency_file(cohort: Path, tmp_path: Path) -> None:
    panel = load_panel(cohort / "panel.tsv")
    rows = [f"{s.id}\t{s.chrom}\t{s.pos}\t{s.alt}\t{s.ref}\t0.5" for s in panel.sites]
    pgs = tmp_path / "author.txt"
    pgs.write_text("#pgs_id=PGS000001\n#genome_build=hg38\nrsID\tchr_name\tchr_position\t"
                   "effect_allele\tother_allele\teffect_weight\n" + "\n".join(rows) + "\n")
    with pytest.raises(GenofedError, match="no allelefrequency_effect column; give"):
        load_pgs(pgs)
    score = load_pgs(pgs, af_file=cohort / "panel.tsv")  # a genofed panel is a frequency file
    np.testing.assert_allclose(score.panel.af, panel.af)
    np.testing.assert_allclose(score.weights, 0.5)
    assert load_panel_file(pgs, af_file=cohort / "panel.tsv") == score.panel
    assert is_pgs_file(pgs) and not is_pgs_file(cohort / "panel.tsv")


HEAD = "#genome_build=GRCh38\n"
COLS = ("chr_name\tchr_position\teffect_allele\tother_allele\teffect_weight\t"
        "allelefrequency_effect\n")


@pytest.mark.parametrize(("text", "words"), [
    ("#genome_build=NR\n" + COLS + "22\t100\tA\tG\t0.1\t0.2\n", "need a genome build"),
    (HEAD + "chr_name\tchr_position\teffect_allele\n22\t100\tA\n", "no effect_weight column"),
    (HEAD + COLS + "22\t100\tA\tG\t0.1\t0.2\n22\t100\tA\tG\t0.3\t0.2\n", ":4: duplicate site"),
    (HEAD + COLS + "22\tten\tA\tG\t0.1\t0.2\n", ":3: chr_position must be an integer"),
    (HEAD + COLS + "22\t100\tA\tG\t0.1\tNR\n", ":3: allelefrequency_effect 'NR'"),
    (HEAD + COLS + "22\t100\tA\tG\t0.1\n", ":3: expected 6 tab-separated fields"),
    (HEAD + COLS + "22\t100\tA\t\t0.1\t0.2\n", "no usable sites"),
    (HEAD, "no column header line"),
])
def test_bad_scoring_files(tmp_path: Path, text: str, words: str) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(GenofedError, match=words) as info:
        load_pgs(p)
    assert str(info.value).startswith(str(p)) and "\n" not in str(info.value)


def test_rows_that_are_not_sites_are_left_out(tmp_path: Path) -> None:
    p = tmp_path / "mixed.txt"
    p.write_text(HEAD + "chr_name\tchr_position\teffect_allele\tother_allele\teffect_weight\t"
                 "allelefrequency_effect\tis_haplotype\n"
                 "22\t100\tA\tG\t0.1\t0.2\tFALSE\n22\t200\tA\t\t0.1\t0.2\tFALSE\n"
                 "22\t300\tHLA\tG\t0.1\t0.2\tFALSE\n22\t400\tA\tG\t0.1\t0.2\tTRUE\n")
    score = load_pgs(p)
    assert [s.pos for s in score.panel.sites] == [100]
    assert score.skipped == {"not_harmonized": 0, "no_other_allele": 1, "not_a_site": 1,
                             "non_acgt_allele": 1}
