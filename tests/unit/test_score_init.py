"""`genofed export --init-from SCORE`: a simulated PGS Catalog score, mapped onto the panel and
the standardized encoding, gives the logistic regression the score's own ranking of genomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("msprime")

from genofed.agent.encode import encode_dosages
from genofed.agent.vcf import read_dosages
from genofed.errors import GenofedError
from genofed.export.score_init import params_from_score
from genofed.models.panel import load_panel
from genofed.models.pgs import load_pgs
from genofed.sim.cohort import CohortInfo, simulate


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortInfo:
    return simulate(tmp_path_factory.mktemp("scored"), devices=2, samples_per_device=50,
                    variants=400, panel_size=200, seed=3, test_samples=100,
                    reference_samples=100, external_samples=600, chromosomes=(21, 22),
                    missing_rate=0.0)


def _swap_half(src: Path, dst: Path) -> None:
    """The same score with every other site's effect allele the panel's REF (weight negated,
    frequency 1 - p): the way half a published score's rows meet a panel."""
    out = []
    rows = 0
    for line in src.read_text().splitlines():
        f = line.split("\t")
        if line.startswith("#") or f[0] == "chr_name":
            out.append(line)
            continue
        if rows % 2:
            f[2], f[3], f[4], f[5] = f[3], f[2], repr(-float(f[4])), repr(1 - float(f[5]))
        rows += 1
        out.append("\t".join(f))
    dst.write_text("\n".join(out) + "\n")


def test_score_file_and_mapping(cohort: CohortInfo, tmp_path: Path) -> None:
    assert cohort.score is not None and cohort.score.name == "PGS_SIM_EUR.txt"
    panel = load_panel(cohort.panel)
    swapped = tmp_path / "swapped.txt"
    _swap_half(cohort.score, swapped)
    score = load_pgs(swapped)  # the project's own PGS Catalog reader
    params, counts = params_from_score("logreg", panel, score, logit_sd=None)
    assert counts == {"same": 100, "swapped": 100, "not_on_panel": 0, "other_alleles": 0}
    # The oracle: the score summed the Catalog's way, effect-allele dosages times weights, read
    # from the test VCF against the score itself as the panel.
    raw = read_dosages(cohort.test_vcf, score.panel).dosage.astype(np.float64) @ score.weights
    x = encode_dosages(read_dosages(cohort.test_vcf, panel).dosage, panel.af)
    logits = x.astype(np.float64) @ params["linear_weight"][0] + params["linear_bias"][0]
    diff = logits - raw
    assert np.ptp(diff) < 1e-4 * np.ptp(raw)  # equal up to the constant the bias leaves out
    # By default the same direction, scaled to a logit of standard deviation 1.
    scaled, _ = params_from_score("logreg", panel, score)
    w, w_raw = scaled["linear_weight"][0], params["linear_weight"][0]
    assert np.linalg.norm(w) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(w, w_raw / np.linalg.norm(w_raw), rtol=1e-5, atol=1e-8)


def test_score_init_refuses_other_models(cohort: CohortInfo) -> None:
    assert cohort.score is not None
    with pytest.raises(GenofedError, match="logreg"):
        params_from_score("mlp", load_panel(cohort.panel), load_pgs(cohort.score))
