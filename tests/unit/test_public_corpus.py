"""The reader on real public files (issue 15): every VCF Debian's python-pyvcf-examples and
r-bioc-variantannotation ship (1000 Genomes, GATK, freebayes, samtools, VarScan, Complete
Genomics with GT last in FORMAT...), and the PGS Catalog's own test scoring files
(pgscatalog-core 1.1.1's sdist), against bcftools
for genotypes and plink2 `--score` run the way pgsc_calc runs it for scores. See
tests/support/corpus.py for the files and the oracles' exact commands.

Where genofed and an oracle differ by design, the rule that decides is named: FILTER [12],
FORMAT/FT [21], half calls [14] and haploid calls [18] (plink2 reads a haploid call on an
autosome as homozygous).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.corpus import (
    PYVCF_DIR,
    bcftools_genotypes,
    corpus_dir,
    oracle_dosage,
    plink2_counts,
    plink2_pfile,
    plink2_score,
    prepare,
    record_sites,
    variantannotation_dir,
)

from genofed.agent.vcf import Dosages, read_dosages
from genofed.errors import GenofedError
from genofed.models.builds import CONTIG_LENGTHS
from genofed.models.panel import Panel, Site
from genofed.models.pgs import load_pgs

needs_tools = pytest.mark.skipif(
    not PYVCF_DIR.is_dir() or subprocess.run(["sh", "-c", "command -v plink2 bcftools"],
                                             capture_output=True).returncode != 0,
    reason="needs Debian's python-pyvcf-examples, plink2 and bcftools (make system-deps)")
RELEASED = sorted(p.name for p in PYVCF_DIR.glob("*.vcf*") if not p.name.endswith(".tbi"))
B37 = CONTIG_LENGTHS["GRCh37"]

# Released files genofed refuses, and the words of its one-line refusal. Every other file
# must read. (htslib cannot read the four with spaces for tabs either.)
REFUSED = {
    "1kg.sites.vcf.gz": "VCF has no samples", "contig_idonly.vcf": "VCF has no samples",
    "gonl.chr20.release4.gtc.vcf.gz": "VCF has no samples",
    "issue-201.vcf.gz": "VCF has no samples",
    "example-4.1-bnd.vcf": "not a VCF/BCF", "example-4.1-info-multiple-values.vcf":
        "not a VCF/BCF", "example-4.2.vcf.gz": "not a VCF/BCF",
    "gatk_26_meta.vcf": "not a VCF/BCF", "issue_49.vcf.gz": "not a VCF/BCF",
    "metadata-whitespace.vcf.gz": "not a VCF/BCF",
    "strelka.vcf.gz": "declares no GT",  # somatic allele counts, no genotypes
    # NCBI36 (hg18) files against a GRCh37 panel [4]: by name, or by chr20's NCBI36 length
    **{name: "names NCBI36; the panel is GRCh37" for name in (
        "example-4.0.vcf", "example-4.1-sv.vcf", "issue-16.vcf", "issue-254.vcf", "tb.vcf.gz",
        "walk_left.vcf", "walk_refcall.vcf")},
    "example-4.1.vcf": "contig 20 has length 62435964",
    "mixed-filtering.vcf": "contig 20 has length 62435964",
}
# Files with panel sites whose dosages are compared (the others hold none a GRCh37 panel can
# have: non-human contigs, symbolic or missing ALTs).
COMPARED = ("1kg.vcf.gz", "FT.vcf.gz", "bad-info-character.vcf", "example-4.1-ploidy.vcf",
            "freebayes.vcf.gz", "gatk.vcf.gz", "info-type-character.vcf", "issue-140-file1.vcf",
            "issue-140-file2.vcf", "issue-140-file3.vcf", "issue-214.vcf", "parse-meta-line.vcf",
            "samples-space.vcf", "samtools.vcf", "uncalled_genotypes.vcf")


# The files of r-bioc-variantannotation (paths under its package directory), as above.
VA_FILES = tuple(f"extdata/{n}" for n in (
    "chr22.vcf.gz", "chr7-sub.vcf.gz", "ex2.vcf", "gl_chr1.vcf", "h1187-10k.vcf.gz",
    "hapmap_exome_chr22.vcf.gz", "structural.vcf")) + tuple(f"unitTests/cases/{n}.vcf" for n in (
        "FORMAT_header_no_SAMPLEs", "VarScan_header", "banded_gvcf", "buffer_realloc",
        "ex1-seq1-90", "expand", "fewer-FORMAT-than-GENO", "meta_header",
        "missing-FORMAT-metadata-elt", "mixedStructural", "multiple_INFO_fields",
        "negative_FORMAT_Number", "no_FORMAT_column", "no_GENO_row", "no_INFO_header",
        "unspecified_INFO_FORMAT_fields"))
VA_REFUSED = {
    "ex2.vcf": "contig 20 has length 62435964", "structural.vcf": "names NCBI36",
    "FORMAT_header_no_SAMPLEs.vcf": "VCF has no samples",
    "VarScan_header.vcf": "unable to parse next record",  # htslib cannot parse it either
    "ex1-seq1-90.vcf": "declares no GT", "fewer-FORMAT-than-GENO.vcf":
        "unable to parse next record", "missing-FORMAT-metadata-elt.vcf": "declares no GT",
    "mixedStructural.vcf": "names NCBI36", "multiple_INFO_fields.vcf": "VCF has no samples",
    "no_FORMAT_column.vcf": "VCF has no samples", "no_GENO_row.vcf": "declares no GT",
    "unspecified_INFO_FORMAT_fields.vcf": "contig 20 has length 62435964",
}
VA_COMPARED = tuple(f"extdata/{n}" for n in (
    "chr22.vcf.gz", "chr7-sub.vcf.gz", "gl_chr1.vcf", "h1187-10k.vcf.gz",
    "hapmap_exome_chr22.vcf.gz")) + tuple(f"unitTests/cases/{n}.vcf" for n in (
        "banded_gvcf", "negative_FORMAT_Number", "no_INFO_header"))

# Files where plink2 and genofed share no site, and the rule that decides.
NO_SHARED_SITE = {
    "FT.vcf.gz": "every call haploid [18]; FT filters [21] make calls missing",
    "example-4.1-ploidy.vcf": "chrX, haploid and triploid calls [18]",
    "issue-214.vcf": "multi-allelic records only (pgsc_calc's --max-alleles 2)",
    "banded_gvcf.vcf": "<NON_REF> records only (pgsc_calc's --max-alleles 2)",
    "no_INFO_header.vcf": "chrX only [18]",
    "chr7-sub.vcf.gz": "GT last in FORMAT (Complete Genomics): plink2 reads no genotype [22]",
}


def _panel(sites: list[tuple[str, int, str, str]], build: str = "GRCh37") -> Panel:
    return Panel(build, tuple(Site(c, p, r, a, f"{c}:{p}:{r}:{a}", 0.3) for c, p, r, a in sites))


def _prepared(src: Path, tmp: Path) -> Path:
    """The released file bgzipped and indexed; FT.vcf.gz (GATK genotype filters on a bacterial
    contig named `ref`) is put on contig 22 without a length, its records untouched."""
    if src == PYVCF_DIR / "FT.vcf.gz":
        text = subprocess.run(["zcat", str(src)], check=True, capture_output=True,
                              text=True).stdout
        text = text.replace("##contig=<ID=ref,length=4888768>\n", "").replace("\nref\t", "\n22\t")
        src = tmp / "FT.vcf"
        src.write_text(text)
    return prepare(src, tmp)


def _reads_or_refuses(src: Path, refusal: str | None, tmp_path: Path) -> None:
    """Through the real command, on the file as released (plain gzip, plain text, BGZF)."""
    try:
        sites = record_sites(_prepared(src, tmp_path), B37)
    except (OSError, ValueError):  # what htslib cannot read or index
        sites = []
    panel = tmp_path / "panel.tsv"
    panel.write_text(_panel(sites or [("22", 100, "A", "G")]).to_tsv())
    done = subprocess.run([sys.executable, "-m", "genofed", "features", "--panel", str(panel),
                           "--vcf", str(src), "-o", str(tmp_path / "o.npz"),
                           "--min-match-rate", "0"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr
    if refusal is not None:
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"genofed: {src}: ")
        assert refusal in lines[0]
    else:
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def va_dir() -> Path:
    tree = variantannotation_dir()
    if tree is None:
        pytest.skip("apt cannot download r-bioc-variantannotation (make corpus)")
    return tree


@needs_tools
@pytest.mark.parametrize("name", RELEASED)
def test_every_released_file_reads_or_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    _reads_or_refuses(PYVCF_DIR / name, REFUSED.get(name), tmp_path)


@needs_tools
@pytest.mark.parametrize("name", VA_FILES)
def test_every_variantannotation_file_reads_or_is_refused_in_one_line(
        tmp_path: Path, va_dir: Path, name: str) -> None:
    _reads_or_refuses(va_dir / name, VA_REFUSED.get(Path(name).name), tmp_path)


def _compare_with_bcftools(vcf: Path, sites: list[tuple[str, int, str, str]], d: Dosages
                           ) -> int:
    """Every dosage equals bcftools's genotype under the rules; the calls compared."""
    oracle = bcftools_genotypes(vcf)
    compared = 0
    for j, key in enumerate(sites):
        filt, gts, fts, index = oracle[key]
        want = [oracle_dosage(filt, gt, fts[i] if fts else None, index)
                for i, gt in enumerate(gts)]
        np.testing.assert_array_equal(d.dosage[:, j], np.array(want, dtype=np.float32),
                                      err_msg=f"{vcf.name} {key}")
        compared += len(gts)
    return compared


def _score_sites(vcf: Path, sites: list[tuple[str, int, str, str]], d: Dosages
                 ) -> list[int]:
    """Panel sites plink2 and genofed both use: biallelic records (pgsc_calc's
    --max-alleles 2) in upper case that genofed read, on autosomes, without a haploid call
    [18] (plink2 reads one as homozygous, and on X, Y and MT counts by the sex a VCF does not
    carry), and with a call in every sample where pgsc_calc mean-imputes (50 samples or
    more), without a call FORMAT/FT fails [21], and with GT first in FORMAT [22]. FILTER
    failures [12] are missing in genofed's dosages, which is what is scored."""
    import pysam

    oracle = bcftools_genotypes(vcf)
    biallelic = set()
    with pysam.VariantFile(str(vcf)) as vf:
        for rec in vf:
            # plink2 compares allele codes case-sensitively; VCF bases are not (genofed reads
            # `cca` as CCA): sites written in lower case are left out
            # and pgsc_calc gives no ID to alleles over 100 bases (--new-id-max-allele-len)
            # plink2 reads no genotype where GT is not FORMAT's first key; genofed reads it
            # wherever it is, as bcftools does [22]
            gt_first = not rec.format.keys() or rec.format.keys()[0] == "GT"
            if len(rec.alleles) == 2 and gt_first and all(a == a.upper() and len(a) <= 100
                                                          for a in rec.alleles):
                biallelic.add((rec.chrom, rec.pos, rec.ref.upper(), rec.alts[0].upper()))
    observed = ~np.isnan(d.dosage)
    keep = []
    for j, key in enumerate(sites):
        if key not in biallelic or not observed[:, j].any() or \
                key[0].removeprefix("chr") in ("X", "Y", "MT", "M"):
            continue
        fts = oracle[key][2]  # plink2 keeps a call FORMAT/FT fails; genofed does not [21]
        if any(f not in ("PASS", ".", "") for ft in fts for f in ft.split(";")):
            continue
        if (d.ploidy is not None and (d.ploidy[:, j] == 1).any()):
            continue
        if len(d.samples) >= 50 and not observed[:, j].all():
            continue
        keep.append(j)
    return keep


def _plink_id(key: tuple[str, int, str, str]) -> str:
    chrom, pos, ref, alt = key
    return f"{chrom.removeprefix('chr')}:{pos}:{ref}:{alt}"


def _against_oracles(src: Path, tmp_path: Path) -> None:
    name = src.name
    vcf = _prepared(src, tmp_path)
    sites = record_sites(vcf, B37)
    d = read_dosages(vcf, _panel(sites), min_match_rate=0)
    assert _compare_with_bcftools(vcf, sites, d) > 0
    keep = _score_sites(vcf, sites, d)
    if name in NO_SHARED_SITE:  # the rule that decides: see NO_SHARED_SITE
        assert not keep
        if name == "FT.vcf.gz":
            assert d.report["missing_genotype_by_reason"]["genotype_filtered"] > 0
        if name == "chr7-sub.vcf.gz":  # read as bcftools reads it, every record
            assert d.report["gt_not_first_records"] > 1000
        return
    assert keep, "no site both use"
    # Integer weights: plink2 prints six significant digits, exact for these sums.
    weights = np.random.default_rng(15).integers(-9, 10, len(sites)).astype(np.float64)
    rows = [(_plink_id(sites[j]), sites[j][3], float(weights[j])) for j in keep]
    got = plink2_score(plink2_pfile(vcf, tmp_path), rows, len(d.samples), tmp_path)
    ours = np.nan_to_num(d.dosage[:, keep].astype(np.float64)) @ weights[keep]
    assert len(got) == len(d.samples)
    for i, sample in enumerate(d.samples):
        assert math.isclose(ours[i], got[i], rel_tol=0, abs_tol=1e-9), (sample, name)


@needs_tools
@pytest.mark.parametrize("name", COMPARED)
def test_dosages_equal_bcftools_and_the_score_equals_plink2(tmp_path: Path, name: str) -> None:
    _against_oracles(PYVCF_DIR / name, tmp_path)


@needs_tools
@pytest.mark.parametrize("name", VA_COMPARED)
def test_variantannotation_dosages_equal_bcftools_and_score_plink2(
        tmp_path: Path, va_dir: Path, name: str) -> None:
    _against_oracles(va_dir / name, tmp_path)


def _scoring_sites(path: Path) -> tuple[str, list[tuple[str, int, str, str]]]:
    """(build, [(chrom, pos, other, effect)]) read plainly from a scoring file's columns."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:  # type: ignore[operator]
        lines = f.read().splitlines()
    meta = dict(ln.lstrip("#").split("=", 1) for ln in lines if ln.startswith("#") and "=" in ln)
    rows = list(csv.DictReader((ln for ln in lines if not ln.startswith("#")), delimiter="\t"))
    harmonized = "hm_pos" in rows[0]
    build = meta["HmPOS_build" if harmonized else "genome_build"].strip()
    out = []
    for r in rows:
        chrom, pos = (r["hm_chr"], r["hm_pos"]) if harmonized else (r["chr_name"],
                                                                   r["chr_position"])
        out.append((chrom, int(pos), r["other_allele"].upper(), r["effect_allele"].upper()))
    return build, out


SCORING = ("PGS000001_hmPOS_GRCh37.txt", "PGS000001_hmPOS_GRCh38.txt.gz",
           "PGS000002_hmPOS_GRCh37.txt.gz", "PGS000802_hmPOS_GRCh37.txt", "custom.txt")


@pytest.fixture(scope="module")
def pgs_data() -> Path:
    data = corpus_dir()
    if data is None:
        pytest.skip("the PyPI registry cannot be reached for pgscatalog-core's sdist "
                    "(make corpus)")
    return data


@needs_tools
@pytest.mark.parametrize("name", SCORING)
def test_pgs_catalog_score_equals_plink2_score(tmp_path: Path, pgs_data: Path,
                                               name: str) -> None:
    """A PGS Catalog test scoring file read by genofed as a panel, against a VCF at its sites
    (the genotypes are drawn here: the score files ship no genotypes; a third of the records
    put the effect allele as REF, some calls are missing): dosages equal bcftools's, the score
    equals plink2's `--score` as printed (six significant digits) and, exactly, the sum over
    plink2's own allele counts (`--export A`)."""
    build, sites = _scoring_sites(pgs_data / name)
    af = tmp_path / "af.tsv"
    af.write_text("chrom\tpos\tref\talt\taf\n" + "".join(f"{c}\t{p}\t{o}\t{e}\t0.3\n"
                                                      for c, p, o, e in sites))
    score = load_pgs(pgs_data / name, af_file=af)
    rng = np.random.default_rng(len(sites))
    n = 20
    lines, keys = [], []
    for k, (c, p, o, e) in enumerate(sorted(set(sites), key=lambda s: (int(s[0]), s[1]))):
        ref, alt = (e, o) if k % 3 == 0 else (o, e)
        gts = ["./." if rng.random() < 0.05 else f"{rng.integers(0, 2)}/{rng.integers(0, 2)}"
               for _ in range(n)]
        lines.append(f"{c}\t{p}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gts))
        keys.append((c, p, ref, alt))
    header = ["##fileformat=VCFv4.2"] + [
        f"##contig=<ID={c},length={CONTIG_LENGTHS[build][c]}>"
        for c in sorted({s[0] for s in sites}, key=int)] + [
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t"
        + "\t".join(f"S{i}" for i in range(n))]
    plain = tmp_path / "calls.vcf"
    plain.write_text("\n".join(header + lines) + "\n")
    vcf = prepare(plain, tmp_path)
    d = read_dosages(vcf, score.panel, min_match_rate=0)
    assert d.report["build"] == build and d.report["match_rate"] == 1.0
    oracle = bcftools_genotypes(vcf)
    for j, s in enumerate(score.panel.sites):
        key = (s.chrom, s.pos, s.ref, s.alt) if (s.chrom, s.pos, s.ref, s.alt) in oracle \
            else (s.chrom, s.pos, s.alt, s.ref)
        filt, gts, _, index = oracle[key]
        alt_copies = np.array([oracle_dosage(filt, g, None, index) for g in gts])
        want = alt_copies if key[3] == s.alt else 2 - alt_copies  # swapped [16]
        np.testing.assert_array_equal(d.dosage[:, j], want.astype(np.float32))
    ids = {(c, p): f"{c}:{p}:{r}:{a}" for c, p, r, a in keys}
    rows = [(ids[(s.chrom, s.pos)], s.alt, float(w))
            for s, w in zip(score.panel.sites, score.weights, strict=True)]
    pfile = plink2_pfile(vcf, tmp_path)
    printed = plink2_score(pfile, rows, n, tmp_path)
    counts = plink2_counts(pfile, rows, tmp_path)
    ours = np.nan_to_num(d.dosage.astype(np.float64)) @ score.weights
    for i in range(n):
        exact = sum(w * counts[i][v] for v, _, w in rows if not math.isnan(counts[i][v]))
        assert math.isclose(ours[i], exact, rel_tol=0, abs_tol=1e-9)
        assert math.isclose(ours[i], printed[i], rel_tol=1e-5, abs_tol=1e-5)


@needs_tools
def test_every_pgs_catalog_test_file_loads_or_is_refused_in_one_line(pgs_data: Path) -> None:
    for path in sorted(pgs_data.iterdir()):
        if path.suffix in (".pvar", ".bim", ".zst") or path.is_dir() or "bim" in path.name \
                or "relabel" in path.name:
            continue
        try:
            load_pgs(path)
        except GenofedError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))


@needs_tools
@pytest.mark.parametrize("every", [1, 35])
def test_access_plan_on_1000_genomes_chr22_streams_what_it_should(tmp_path: Path, va_dir: Path,
                                                                  every: int) -> None:
    """The 10,376 records of chr22.vcf.gz (a ##contig line added, so that any reader takes
    it): a full panel, and a panel of every 35th record, are both read fastest by one stream
    (measured: 0.33 s against 0.65 s by region for the full panel; 0.075 s against 0.098 s
    for 300 sites); the plan chose region fetches for both."""
    src = va_dir / "extdata/chr22.vcf.gz"
    text = subprocess.run(["zcat", str(src)], check=True, capture_output=True,
                          text=True).stdout
    plain = tmp_path / "chr22.vcf"
    plain.write_text(text.replace("\n#CHROM", "\n##contig=<ID=22,length=51304566>\n#CHROM", 1))
    vcf = prepare(plain, tmp_path)
    sites = record_sites(vcf, B37)[::every]
    d = read_dosages(vcf, _panel(sites), min_match_rate=0)
    assert d.report["build"] == "GRCh37" and d.report["match_rate"] == 1.0
    assert d.report["access"] == "stream", d.report["access_cost_s"]
