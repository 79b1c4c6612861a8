"""`genofed export --init-from SCORE`: a PGS Catalog score's weights as a model's starting point.

The model reads x_j = (d_j - 2p_j) / sqrt(2p_j(1-p_j)) where d_j counts the panel's ALT and
p_j is the panel's frequency (`agent/encode.py`). A score adds beta per copy of its effect
allele e: beta * d_e = beta * sqrt(2p(1-p)) * x + constant when e is the panel's ALT, and
-beta * sqrt(2p(1-p)) * x + constant when e is its REF (swapped, d_e = 2 - d). So the
logistic regression's weight is +-beta * sqrt(2p(1-p)) and its bias stays 0: the constants
shift every genome alike and a score carries no intercept. Score sites off the panel, or with
other alleles, are left out and counted; panel sites without a score weight start at 0.
Strand flips are not tried: a simulated score is on the panel's own strand and build.

The weights are then scaled so the model's logit has standard deviation `logit_sd` (1 by
default) under the panel's frequencies, sites taken as independent: ||w|| = logit_sd. A
score's raw weights carry its own cohort's effect scale (a liability or log-odds scale, and
the noise of an external GWAS); started at that scale, fine-tuning spends rounds shrinking
them. A polygenic score's logit SD is about 1.7 sqrt(R^2) on the liability scale, at most
1.7 and usually well below, so 1 keeps the score's ranking and leaves the federation room to
correct it. Measured on `genofed bench ancestry_transfer`'s first seed (12 rounds): from the
raw score FedAvg came within 0.01 of the centralized AUC in 6 rounds, from zero in 4, from the
score scaled to SD 1 in 2 (scaled to 0.3 and 0.1 times the raw norm: 2 and 2, to 0.03: 4).
"""

from __future__ import annotations

import numpy as np

from genofed.agent.contigs import normalize_contig
from genofed.errors import LocalInputError
from genofed.models.panel import Panel
from genofed.models.pgs import Score


def params_from_score(model: str, panel: Panel, score: Score, *, logit_sd: float | None = 1.0
                      ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The logistic regression's named arrays from `score`, and how its sites matched;
    `logit_sd` None keeps the score's own scale."""
    if model != "logreg":
        raise LocalInputError(f"export: --init-from maps a score onto a logreg's weights; "
                              f"{model} has no one weight per site")
    where = {(normalize_contig(s.chrom), s.pos): j for j, s in enumerate(panel.sites)}
    af = panel.af
    w = np.zeros(len(panel), dtype=np.float64)
    counts = {"same": 0, "swapped": 0, "not_on_panel": 0, "other_alleles": 0}
    for site, beta in zip(score.panel.sites, score.weights, strict=True):
        j = where.get((normalize_contig(site.chrom), site.pos))
        if j is None:
            counts["not_on_panel"] += 1
            continue
        p = panel.sites[j]
        if (p.ref, p.alt) == (site.ref, site.alt):
            sign, kind = 1.0, "same"
        elif (p.ref, p.alt) == (site.alt, site.ref):
            sign, kind = -1.0, "swapped"
        else:
            counts["other_alleles"] += 1
            continue
        counts[kind] += 1
        w[j] += sign * float(beta) * np.sqrt(2 * af[j] * (1 - af[j]))
    if counts["same"] + counts["swapped"] == 0:
        raise LocalInputError(f"export: --init-from: none of the score's {len(score.weights)} "
                              f"sites is on the panel")
    norm = float(np.linalg.norm(w))
    if logit_sd is not None and norm > 0:
        w *= logit_sd / norm
    return ({"linear_weight": w[None, :].astype(np.float32),
             "linear_bias": np.zeros(1, dtype=np.float32)}, counts)
