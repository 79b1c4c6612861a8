"""A polygenic score trained on one ancestry's external cohort, written as a PGS Catalog
scoring file (format 2.0), for federated transfer learning (`genofed export --init-from`).

The external cohort's genomes are drawn with the rest but belong to no device and no test
set, all of one ancestry (`external_ancestry`), phenotyped by the same trait. The score is an
L2-penalized logistic regression (scikit-learn, C = 0.05) on their panel genotypes standardized
by the panel's reference frequencies; its weights are turned back into log odds per copy of the
effect allele (the panel's ALT), w_j / sqrt(2 p_j (1 - p_j)), as the Catalog's effect_weight is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genofed.models.panel import Panel
from genofed.sim.trait import standardize
from genofed.sim.windows import dosage

PENALTY_C = 0.05


def train_score(panel: Panel, codes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-allele log-odds weights [panel] from external genomes (codes [n, panel]) and labels."""
    from sklearn.linear_model import LogisticRegression

    af = panel.af
    x = standardize(dosage(codes).astype(np.float64), af)
    clf = LogisticRegression(C=PENALTY_C, max_iter=2000).fit(x, y)
    return np.asarray(clf.coef_[0] / np.sqrt(2 * af * (1 - af)))


def write_score(path: Path, panel: Panel, weights: np.ndarray, *, ancestry: str, n: int) -> Path:
    """Write the PGS Catalog scoring file (effect allele = ALT, other = REF)."""
    lines = [
        "###PGS CATALOG SCORING FILE - see https://www.pgscatalog.org/downloads/#dl_ftp_scoring",
        "#format_version=2.0",
        "##POLYGENIC SCORE (PGS) INFORMATION",
        f"#pgs_id=PGS_SIM_{ancestry}",
        f"#pgs_name=genofed simulated score, {ancestry} external cohort of {n}",
        "#trait_reported=simulated liability-threshold trait",
        "#weight_type=log(OR)",
        "#genome_build=GRCh38",
        f"#variants_number={len(panel)}",
        "chr_name\tchr_position\teffect_allele\tother_allele\teffect_weight\t"
        "allelefrequency_effect",
    ]
    lines += [f"{s.chrom.removeprefix('chr')}\t{s.pos}\t{s.alt}\t{s.ref}\t{w:.6g}\t{s.af:.6g}"
              for s, w in zip(panel.sites, weights, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
