"""The cohort simulator: layout, VCF validity, truth agreement, panel, phenotypes, determinism."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("msprime")

import pysam
from support.vcftools import bcftools_dosages

from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.vcf import read_dosages
from genofed.errors import GenofedError
from genofed.models.panel import load_panel
from genofed.sim.cohort import (
    CONTIG_LENGTH,
    Cohort,
    CohortInfo,
    SimParams,
    build_cohort,
    simulate,
    write_cohort,
)

SMALL = {"devices": 3, "samples_per_device": 20, "variants": 300, "panel_size": 60,
         "seed": 7, "test_samples": 30, "reference_samples": 100, "missing_rate": 0.02}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cohort, CohortInfo]:
    cohort = build_cohort(SimParams(**SMALL))
    return cohort, write_cohort(cohort, tmp_path_factory.mktemp("cohort"))


def test_layout_and_manifest(small: tuple[Cohort, CohortInfo]) -> None:
    _, info = small
    root = info.root
    assert info.device_ids == ("dev00", "dev01", "dev02")
    for dev in info.device_ids:
        for name in ("calls.vcf.gz", "calls.vcf.gz.tbi", "phenotypes.tsv"):
            assert (root / "devices" / dev / name).is_file()
    for name in ("calls.vcf.gz", "calls.vcf.gz.tbi", "phenotypes.tsv"):
        assert (root / "test" / name).is_file()
    manifest = json.loads((root / "cohort.json").read_text())
    assert manifest["params"]["seed"] == 7
    assert manifest["variants"] == 300 and manifest["panel_size"] == 60
    assert [d["id"] for d in manifest["devices"]] == ["dev00", "dev01", "dev02"]
    assert manifest["devices"][1]["vcf"] == "devices/dev01/calls.vcf.gz"
    assert manifest["test"]["samples"] == 30
    assert len(manifest["causal_sites"]) == round(0.05 * 60)  # the default causal fraction
    assert manifest["meff"]["value"] > 1
    for dev in info.device_ids:
        assert (root / "devices" / dev / "ancestry.tsv").is_file()


def test_vcf_header_and_records(small: tuple[Cohort, CohortInfo]) -> None:
    _, info = small
    vcf = info.device_vcfs[0]
    with gzip.open(vcf, "rt") as f:
        head = [next(f) for _ in range(8)]
    assert head[0] == "##fileformat=VCFv4.2\n"
    assert "##contig=<ID=chr1,length=248956422,assembly=GRCh38>\n" in head
    with pysam.VariantFile(str(vcf)) as vf:
        assert vf.compression == "BGZF" and vf.index is not None
        assert vf.header.contigs["chr22"].length == CONTIG_LENGTH
        assert list(vf.header.contigs) == [f"chr{c}" for c in range(1, 23)]
        assert list(vf.header.samples) == [f"dev00_s{i:04d}" for i in range(20)]
        records = list(vf)
        assert all(len(list(vf.fetch(f"chr{c}"))) > 0 for c in range(1, 23))  # every autosome
    assert len(records) == 300
    keys = [(int(r.chrom[3:]), r.pos) for r in records]
    assert keys == sorted(set(keys))
    assert all(1 <= r.pos <= r.header.contigs[r.chrom].length for r in records)
    for r in records:
        assert r.ref is not None and r.alleles is not None and r.alts is not None
        assert len(r.alleles) == 2 and r.ref in "ACGT" and r.alts[0] in "ACGT"
        assert r.ref != r.alts[0] and r.id == f"{r.chrom}_{r.pos}_{r.ref}_{r.alts[0]}"
        assert list(r.filter) == ["PASS"]
    # bcftools agrees it is a well-formed file with 300 biallelic SNPs.
    stats = subprocess.run(["bcftools", "stats", str(vcf)], check=True, capture_output=True,
                           text=True).stdout
    assert "number of SNPs:\t300" in stats
    assert "number of multiallelic sites:\t0" in stats


def test_phased_genotypes_and_missing_rate(small: tuple[Cohort, CohortInfo]) -> None:
    _, info = small
    gts = subprocess.run(["bcftools", "query", "-f", "[%GT\t]\n", str(info.test_vcf)],
                         check=True, capture_output=True, text=True).stdout.split()
    assert len(gts) == 300 * 30
    assert set(gts) <= {"0|0", "0|1", "1|0", "1|1", "./."}
    missing = gts.count("./.") / len(gts)
    assert 0 < missing < 0.05  # missing_rate 0.02


def test_reader_matches_truth(small: tuple[Cohort, CohortInfo]) -> None:
    cohort, info = small
    panel = load_panel(info.panel)
    for group, vcf in zip((*cohort.devices, cohort.test), (*info.device_vcfs, info.test_vcf),
                          strict=True):
        d = read_dosages(vcf, panel, min_match_rate=1.0)
        assert d.samples == group.samples
        np.testing.assert_array_equal(d.dosage, group.dosage[:, cohort.panel_index])
        assert d.report["build"] == "GRCh38"
        assert d.report["missing_genotype"] == int(group.missing[cohort.panel_index].sum())


def test_bcftools_matches_truth(small: tuple[Cohort, CohortInfo]) -> None:
    cohort, info = small
    keys = [(s.chrom, s.pos, s.ref, s.alt) for s in cohort.panel.sites]
    oracle = bcftools_dosages(info.test_vcf, keys)
    got = np.array([oracle[k] for k in keys], dtype=np.float32).T
    np.testing.assert_array_equal(got, cohort.test.dosage[:, cohort.panel_index])


def test_panel(small: tuple[Cohort, CohortInfo]) -> None:
    cohort, info = small
    panel = load_panel(info.panel)
    assert panel == cohort.panel and panel.build == "GRCh38" and len(panel) == 60
    keys = [(int(s.chrom[3:]), s.pos) for s in panel.sites]
    assert keys == sorted(keys)
    for s, row in zip(panel.sites, cohort.panel_index, strict=True):
        assert (s.pos, s.ref, s.alt) == (cohort.positions[row], cohort.ref[row], cohort.alt[row])
        assert s.id == f"{s.chrom}_{s.pos}_{s.ref}_{s.alt}"
    af = panel.af
    assert (np.minimum(af, 1 - af) >= 0.05).all()
    # The reference set is separate from the devices, but drawn from the same populations.
    pooled = np.concatenate([g.haplotypes for g in (*cohort.devices, cohort.test)], axis=1)
    device_af = pooled[cohort.panel_index].mean(axis=(1, 2))
    assert np.abs(af - device_af).mean() < 0.06


def test_phenotypes(small: tuple[Cohort, CohortInfo]) -> None:
    cohort, info = small
    labels: list[int] = []
    for group, path, vcf in zip((*cohort.devices, cohort.test),
                                (*info.device_phenotypes, info.test_phenotypes),
                                (*info.device_vcfs, info.test_vcf), strict=True):
        pheno = read_phenotypes(path)
        with pysam.VariantFile(str(vcf)) as vf:
            assert list(pheno) == list(vf.header.samples)
        assert list(pheno.values()) == group.phenotype.tolist()
        labels += pheno.values()
    assert set(labels) == {0, 1}
    assert abs(np.mean(labels) - 0.3) < 0.02  # threshold at the prevalence quantile


def test_population_split() -> None:
    props = {"AFR": 0.5, "EUR": 0.25, "EAS": 0.25, "AMR": 0.0}
    by_split = {}
    for split in ("population", "iid"):
        c = build_cohort(SimParams(**{**SMALL, "devices": 4, "split": split, "ancestry": props}))
        by_split[split] = [np.bincount(g.population, minlength=4) for g in c.devices]
    # population: every device 80% one ancestry (16 of 20), majors in the stated proportions
    majors = sorted(int(np.argmax(n)) for n in by_split["population"])
    assert majors == [0, 0, 1, 2] and all(n.max() >= 16 for n in by_split["population"])
    # iid: the whole cohort in exactly the stated proportions, no device all one ancestry
    total = np.sum(by_split["iid"], axis=0)
    assert total.tolist() == [40, 20, 20, 0]
    assert all(n.max() < 16 for n in by_split["iid"])


def test_cross_device_follows_the_proportions() -> None:
    props = {"AFR": 0.1, "EUR": 0.6, "EAS": 0.2, "AMR": 0.1}
    c = build_cohort(SimParams(**{**SMALL, "devices": 50, "samples_per_device": 1,
                                  "ancestry": props}))
    got = np.bincount(np.concatenate([g.population for g in c.devices]), minlength=4)
    assert got.tolist() == [5, 30, 10, 5]
    assert c.devices[0].name == "dev00" and c.devices[49].name == "dev49"


def test_phenotype_carries_genetic_signal() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    metrics = pytest.importorskip("sklearn.metrics")
    c = build_cohort(SimParams(devices=2, samples_per_device=300, variants=400, panel_size=50,
                               seed=3, test_samples=300, heritability=0.8, missing_rate=0.0,
                               split="iid", causal_fraction=0.2))
    x = np.concatenate([g.dosage for g in c.devices])[:, c.panel_index]
    y = np.concatenate([g.phenotype for g in c.devices])
    model = sklearn.LogisticRegression(max_iter=1000).fit(x, y)
    score = model.predict_proba(c.test.dosage[:, c.panel_index])[:, 1]
    assert metrics.roc_auc_score(c.test.phenotype, score) > 0.7


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    args = {**SMALL, "variants": 120, "panel_size": 20, "devices": 2}

    def contents(info: CohortInfo) -> list[bytes]:
        files = [*info.device_vcfs, info.test_vcf]
        return ([gzip.decompress(f.read_bytes()) for f in files] + [info.panel.read_bytes()]
                + [f.read_bytes() for f in (*info.device_phenotypes, info.test_phenotypes)])

    a = simulate(tmp_path / "a", **args)
    b = simulate(tmp_path / "b", **args)
    c = simulate(tmp_path / "c", **{**args, "seed": 8})
    assert contents(a) == contents(b)
    assert contents(a) != contents(c)


@pytest.mark.parametrize(("change", "words"), [
    ({"panel_size": 400}, "panel_size"),
    ({"split": "random"}, "split"),
    ({"devices": 0}, "devices"),
    ({"prevalence": 1.0}, "prevalence"),
    ({"variants": -1}, "variants"),
])
def test_bad_parameters(tmp_path: Path, change: dict[str, object], words: str) -> None:
    with pytest.raises(GenofedError, match=words):
        simulate(tmp_path, **{**SMALL, **change})


def test_populations_are_genetically_distinct() -> None:
    c = build_cohort(SimParams(devices=2, samples_per_device=100, variants=300, panel_size=30,
                               seed=5, test_samples=20, missing_rate=0.0))
    hap = np.concatenate([g.haplotypes for g in c.devices], axis=1)
    pop = np.concatenate([g.population for g in c.devices])

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(((hap[:, a].mean(axis=(1, 2)) - hap[:, b].mean(axis=(1, 2))) ** 2).mean())

    halves = np.random.default_rng(0).permutation(len(pop)) < len(pop) // 2
    assert diff(pop == 0, pop == 1) > 3 * diff(halves, ~halves)  # AFR against EUR


def test_streamed_equals_in_memory(tmp_path: Path) -> None:
    """`simulate` (windows to scratch files, VCFs from memory-mapped slices) writes the very
    files `write_cohort(build_cohort(...))` writes from memory, and leaves no scratch behind:
    the small version of `genofed bench simulate_scale`."""
    args = {**SMALL, "devices": 4, "samples_per_device": 6, "chromosomes": (20, 21, 22)}
    streamed = simulate(tmp_path / "s", **args)
    held = write_cohort(build_cohort(SimParams(**args)), tmp_path / "m")

    def files(info: CohortInfo) -> list[bytes]:
        vcfs = [gzip.decompress(f.read_bytes()) for f in (*info.device_vcfs, info.test_vcf)]
        rest = [info.panel, *info.device_phenotypes, info.test_phenotypes,
                *(p.with_name("ancestry.tsv") for p in info.device_phenotypes)]
        return vcfs + [p.read_bytes() for p in rest]

    assert files(streamed) == files(held)
    assert sorted(p.name for p in streamed.root.iterdir()) == [
        "cohort.json", "devices", "panel.tsv", "test"]


def test_cross_device_one_genome_a_device(tmp_path: Path) -> None:
    info = simulate(tmp_path, **{**SMALL, "devices": 12, "samples_per_device": 1,
                                 "chromosomes": (21, 22)})
    panel = load_panel(info.panel)
    for vcf in info.device_vcfs:
        with pysam.VariantFile(str(vcf)) as vf:
            assert len(vf.header.samples) == 1 and vf.index is not None
        assert read_dosages(vcf, panel).dosage.shape == (1, 60)


def test_cli_reports_meff(tmp_path: Path) -> None:
    from conftest import run_genofed

    done = run_genofed("simulate", "--out", str(tmp_path), "--devices", "2",
                       "--samples-per-device", "20", "--variants", "200", "--panel-size", "80",
                       "--test-samples", "20", "--reference-samples", "60",
                       "--chromosomes", "20-22", "--ancestry", "EUR=0.5,AFR=0.5")
    assert done.returncode == 0, done.stderr
    assert "on 3 autosomes" in done.stdout
    meff = float(done.stdout.split("(Li-Ji M_eff) ")[1].split()[0].rstrip(";"))
    assert meff == pytest.approx(json.loads((tmp_path / "cohort.json").read_text())
                                 ["meff"]["value"], abs=0.5)
    bad = run_genofed("simulate", "--out", str(tmp_path / "x"), "--ancestry", "EUR=0.5,XX=0.5")
    assert bad.returncode == 1 and "XX=0.5" in bad.stderr and "Traceback" not in bad.stderr
