"""The reader on the layouts of Clair3, DeepVariant and medaka: reference blocks in all three
dialects, filters per caller, GQ/DP thresholds where the fields exist, haploid calls, and the
missing reasons of the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.caller_fixtures import CALLERS, panel_tsv, write_caller_vcf

from genofed.agent.vcf import read_dosages
from genofed.models.panel import load_panel


@pytest.fixture(scope="module")
def caller_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("callers")
    for name, (_, cases) in CALLERS.items():
        write_caller_vcf(d, name)
        (d / f"{name}.panel.tsv").write_text(panel_tsv(cases))
    return d


@pytest.mark.parametrize("access", ["auto", "stream", "region"])
@pytest.mark.parametrize("name", sorted(CALLERS))
def test_caller_layouts(caller_dir: Path, name: str, access: str) -> None:
    cases = CALLERS[name][1]
    panel = load_panel(caller_dir / f"{name}.panel.tsv")
    d = read_dosages(caller_dir / name, panel, min_match_rate=0.0, access_mode=access)
    want = np.array([c[2] for c in cases if c[1] is not None], dtype=np.float32)
    np.testing.assert_array_equal(d.dosage[0], want)
    reasons: dict[str, int] = {}
    for _, _, _, why in cases:
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
    assert {k: v for k, v in d.report["missing"].items() if v} == reasons
    assert access == "auto" or d.report["access"] == access
    assert d.report["gvcf"] == name.endswith(".g.vcf.gz")


def test_clair3_blocks_records_and_refcall(caller_dir: Path) -> None:
    panel = load_panel(caller_dir / "clair3.g.vcf.gz.panel.tsv")
    d = read_dosages(caller_dir / "clair3.g.vcf.gz", panel, min_match_rate=0.0)
    ev = d.report["matched_by_evidence"]
    assert ev == {"record": 4, "ref_block": 3, "callable_bed": 0, "bam_depth": 0}
    assert d.report["missing_genotype_by_reason"]["unknown_allele"] == 0  # site-level instead


@pytest.mark.parametrize(("name", "kwargs", "now_missing"), [
    ("clair3.g.vcf.gz", {"min_gq": 10}, [1100, 1400]),  # RefCall GQ 9, block GQ 3
    ("clair3.g.vcf.gz", {"min_dp": 10}, [1400]),  # block MIN_DP 2
    ("deepvariant.g.vcf.gz", {"min_dp": 10}, [2800]),  # block MIN_DP 5
    ("deepvariant.g.vcf.gz", {"min_gq": 25}, [2100]),  # RefCall GQ 22
    ("medaka.vcf.gz", {"min_dp": 10}, [3100]),  # INFO/DP 5 (medaka writes no FORMAT/DP)
    ("medaka.vcf.gz", {"min_gq": 10}, [3300]),
])
def test_thresholds_apply_where_the_field_exists(caller_dir: Path, name: str,
                                                 kwargs: dict[str, int],
                                                 now_missing: list[int]) -> None:
    panel = load_panel(caller_dir / f"{name}.panel.tsv")
    base = read_dosages(caller_dir / name, panel, min_match_rate=0.0)
    strict = read_dosages(caller_dir / name, panel, min_match_rate=0.0,
                          min_gq=kwargs.get("min_gq", 0), min_dp=kwargs.get("min_dp", 0))
    pos = np.array([s.pos for s in panel.sites])
    changed = np.flatnonzero(np.isnan(strict.dosage[0]) & ~np.isnan(base.dosage[0]))
    assert sorted(pos[changed].tolist()) == now_missing
    assert strict.report["missing"]["low_quality"] == (base.report["missing"]["low_quality"]
                                                       + len(now_missing))


def test_medaka_haploid_call_is_counted_with_its_ploidy(caller_dir: Path) -> None:
    panel = load_panel(caller_dir / "medaka.vcf.gz.panel.tsv")
    d = read_dosages(caller_dir / "medaka.vcf.gz", panel, min_match_rate=0.0)
    assert d.ploidy is not None
    j = [s.pos for s in panel.sites].index(3200)
    assert d.dosage[0, j] == 1.0 and d.ploidy[0, j] == 1
    assert d.report["ploidy"]["haploid"] == 1 and d.report["ploidy"]["haploid_in_par"] == 0
