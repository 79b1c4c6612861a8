"""The privacy red team at the issue's cross-device shape: one genome a device, 100 devices a
federation, 4,000 panel sites of a genome-wide simulated cohort, 8 rounds of FedAvg at server
lr 1 from zero (the demo's local training), 16 balanced federations a pool (each attacked with
the other 15 as its shadows), 3 pools (seeds), at epsilon none, 8, 4, 2 and 1 (the
cross-device default, per device), delta 1e-5, no amplification by sampling. Writes the red team's
page beside the results.

Then the demo's cross-silo shape (6 clinics x 200 genomes, 500 sites, 8 rounds, 8
federations a pool, 3 pools) without DP and with DP-SGD at epsilon 3 and 2 (the default)
per record (`privacy/redteam_silo.py`), its keys prefixed `silo_`.

Summary: `strongest_attack_auc_no_dp`, `strongest_attack_auc_default_eps` (and at each
epsilon), `default_epsilon`, the ceiling at the default, the model's test AUC at each, and
the largest TPR at 0.1% FPR at the default, for the cross-device shape; the same with
`silo_` for the cross-silo one.

    genofed bench redteam  ->  benchmarks/results/redteam.json, redteam/report.html,
                               redteam_silo/report.html
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from genofed.cli.bench import RESULTS_DIR, write_results
from genofed.privacy.redteam import Shape, violations
from genofed.privacy.redteam_silo import silo_shape
from genofed.privacy.redteam_sim import Genomes, redteam
from genofed.privacy.report import verdicts, write_report
from genofed.protocol.privacyspec import DEFAULT_EPSILON as PRODUCT_DEFAULT

# the product's defaults (`privacyspec.DEFAULT_EPSILON`: per device, per record), among the rest
DEFAULT_EPSILON = PRODUCT_DEFAULT["device"]
EPSILONS = (None, 8.0, 4.0, 2.0, 1.0)
SILO_DEFAULT = PRODUCT_DEFAULT["record"]  # as `genofed demo --dp` runs it
SILO_EPSILONS = (None, 3.0, 2.0)
assert DEFAULT_EPSILON in EPSILONS and SILO_DEFAULT in SILO_EPSILONS


def summarize(doc: dict[str, Any], epsilons: Sequence[float | None], default: float,
              prefix: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Rows and summary keys of one shape (`prefix` "" for cross-device, "silo_" cross-silo),
    tagged by the epsilon asked for (the accountant's claim is a hair under it)."""
    for asked, s in zip(epsilons, doc["settings"], strict=True):
        tag = "no_dp" if asked is None else f"eps{asked:g}"
        strongest = s["attacks"][s["strongest_attack"]]
        for name, a in s["attacks"].items():
            rows.append({"shape": doc["shape"]["name"], "epsilon": "none" if asked is None
                         else round(s["epsilon"], 3), "attack": name, "party": a["party"],
                         "auc": a["auc"], "auc_lo": a["auc_ci"][0], "auc_hi": a["auc_ci"][1],
                         "tpr_1pct": a["tpr"]["0.01"], "tpr_0.1pct": a["tpr"]["0.001"],
                         "auc_ceiling": s["auc_ceiling_profile"]})
        summary[f"{prefix}strongest_attack_auc_{tag}"] = strongest["auc"]
        summary[f"{prefix}strongest_attack_{tag}"] = s["strongest_attack"]
        summary[f"{prefix}model_auc_{tag}"] = s["model_auc"]
        summary[f"{prefix}ceiling_violations_{tag}"] = len(violations(s))
        if asked == default:
            summary[f"{prefix}strongest_attack_auc_default_eps"] = strongest["auc"]
            summary[f"{prefix}strongest_attack_auc_ci_default_eps"] = strongest["auc_ci"]
            summary[f"{prefix}strongest_attack_default_eps"] = s["strongest_attack"]
            summary[f"{prefix}claimed_epsilon_default_eps"] = s["epsilon"]
            summary[f"{prefix}auc_ceiling_default_eps"] = s["auc_ceiling_profile"]
            summary[f"{prefix}auc_ceiling_eps_delta_default_eps"] = s["auc_ceiling"]
            summary[f"{prefix}max_tpr_at_0.1pct_fpr_default_eps"] = max(
                a["tpr"]["0.001"] for a in s["attacks"].values())
            summary[f"{prefix}attacks_over_0.55_default_eps"] = ",".join(
                n for n, a in s["attacks"].items() if a["auc"] > 0.55) or "none"


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    quick = os.environ.get("GENOFED_BENCH_QUICK") == "1"
    shape = Shape(devices=50 if quick else 100, rounds=4 if quick else 8,
                  federations=8 if quick else 16, pools=2 if quick else 3)
    sites = 1000 if quick else 4000
    genomes = Genomes.simulate(shape.pool_size * shape.pools, sites, seed=11)
    doc = redteam(genomes, shape, EPSILONS)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"default_epsilon": DEFAULT_EPSILON, "devices": shape.devices,
                               "sites": sites, "rounds": shape.rounds}
    summarize(doc, EPSILONS, DEFAULT_EPSILON, "", summary, rows)
    write_report(doc, RESULTS_DIR / "redteam")
    print("\n".join(verdicts(doc)))
    # The demo's cross-silo shape, record-level DP-SGD at the demo's epsilons.
    silo = silo_shape(3 if quick else 6, 100 if quick else 200, 4 if quick else 8,
                      federations=4 if quick else 16, pools=2 if quick else 3)
    g = Genomes.simulate(silo.pool_size * silo.pools, 500, seed=12)
    silo_doc = redteam(g, silo, SILO_EPSILONS)
    summary["silo_default_epsilon"] = SILO_DEFAULT
    summarize(silo_doc, SILO_EPSILONS, SILO_DEFAULT, "silo_", summary, rows)
    write_report(silo_doc, RESULTS_DIR / "redteam_silo")
    print("\n".join(verdicts(silo_doc)))
    write_results("redteam", rows, summary)


if __name__ == "__main__":
    main()
