"""The privacy red team at the issue's cross-device shape: one genome a device, 100 devices a
federation, 4,000 panel sites of a genome-wide simulated cohort, 8 rounds of FedAvg at server
lr 1 from zero (the demo's local training), 16 balanced federations a pool (each attacked with
the other 15 as its shadows), 3 pools (seeds), at epsilon none, 8, 4, 2 (the cross-device
default, per device) and 1, delta 1e-5, no amplification by sampling. Writes the red team's
page beside the results.

Summary: `strongest_attack_auc_no_dp`, `strongest_attack_auc_default_eps` (and at each
epsilon), `default_epsilon`, the ceiling at the default, the model's test AUC at each, and
the largest TPR at 0.1% FPR at the default, all for the cross-device shape.

    genofed bench redteam      ->  benchmarks/results/redteam.json, redteam.html
"""

from __future__ import annotations

import logging
import os

from genofed.cli.bench import RESULTS_DIR, write_results
from genofed.privacy.redteam import Shape, violations
from genofed.privacy.redteam_sim import Genomes, redteam
from genofed.privacy.report import verdicts, write_report

DEFAULT_EPSILON = 2.0
EPSILONS = (None, 8.0, 4.0, DEFAULT_EPSILON, 1.0)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    quick = os.environ.get("GENOFED_BENCH_QUICK") == "1"
    shape = Shape(devices=50 if quick else 100, rounds=4 if quick else 8,
                  federations=8 if quick else 16, pools=2 if quick else 3)
    sites = 1000 if quick else 4000
    genomes = Genomes.simulate(2 * shape.devices * shape.pools, sites, seed=11)
    doc = redteam(genomes, shape, EPSILONS)
    rows, summary = [], {"default_epsilon": DEFAULT_EPSILON, "devices": shape.devices,
                         "sites": sites, "rounds": shape.rounds}
    for s in doc["settings"]:
        eps = s["epsilon"]
        tag = "no_dp" if eps is None else f"eps{eps:g}"
        strongest = s["attacks"][s["strongest_attack"]]
        for name, a in s["attacks"].items():
            rows.append({"epsilon": "none" if eps is None else round(eps, 3), "attack": name,
                         "party": a["party"], "auc": a["auc"], "auc_lo": a["auc_ci"][0],
                         "auc_hi": a["auc_ci"][1], "tpr_1pct": a["tpr"]["0.01"],
                         "tpr_0.1pct": a["tpr"]["0.001"],
                         "auc_ceiling": s["auc_ceiling_profile"]})
        summary[f"strongest_attack_auc_{tag}"] = strongest["auc"]
        summary[f"strongest_attack_{tag}"] = s["strongest_attack"]
        summary[f"model_auc_{tag}"] = s["model_auc"]
        if eps is not None and abs(eps - DEFAULT_EPSILON) < 0.01:
            summary["strongest_attack_auc_default_eps"] = strongest["auc"]
            summary["strongest_attack_default_eps"] = s["strongest_attack"]
            summary["auc_ceiling_default_eps"] = s["auc_ceiling_profile"]
            summary["auc_ceiling_eps_delta_default_eps"] = s["auc_ceiling"]
            summary["max_tpr_at_0.1pct_fpr_default_eps"] = max(
                a["tpr"]["0.001"] for a in s["attacks"].values())
            summary["attacks_over_0.55_default_eps"] = ",".join(
                n for n, a in s["attacks"].items() if a["auc"] > 0.55) or "none"
        summary[f"ceiling_violations_{tag}"] = len(violations(s))
    summary["strongest_attack_auc_no_dp"] = summary.pop("strongest_attack_auc_no_dp")
    write_report(doc, RESULTS_DIR / "redteam")
    print("\n".join(verdicts(doc)))
    write_results("redteam", rows, summary)


if __name__ == "__main__":
    main()
