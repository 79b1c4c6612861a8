"""The red team on one real federation's stored rounds (`genofed redteam --from-run`).

What any device or outsider of that federation holds is every released model; the
aggregator's state keeps them all (`aggregator/state.py` `read_journal`, `read_model`). Each
model after a completed round is attacked with the loss threshold (Yeom et al. 2018): the
members are the genomes the devices trained on (read from the cohort's VCFs as the agent reads
them), the non-members the cohort's held-out test genomes, of the same populations. There is
one federation, so there are no seeds: the AUC's interval is DeLong's, a TPR's the binomial
normal interval; with a few hundred non-members, TPR at 0.1% FPR is not resolved (the
threshold is the largest non-member score), which the page says. The epsilon of each round is
the one the aggregator's ledger journaled (its RDP curves give the profile ceiling).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from genofed.errors import LocalInputError
from genofed.privacy.attacks import auc_se, bce, normal_ci, tpr_at_fpr
from genofed.privacy.lira import roc_points
from genofed.privacy.redteam import FPRS, Privacy


def _tpr_ci(t: float, n: int) -> tuple[float, float]:
    return normal_ci(t, math.sqrt(max(t * (1 - t), 1e-12) / n))


def attack_run(state: Path, bundle_dir: Path, cohort: Path) -> dict[str, Any]:
    """The report document of a stored federation (an aggregator state folder, its bundle and
    the cohort folder the devices' data came from)."""
    from genofed.agent.trainer import StepTrainer
    from genofed.aggregator.state import read_journal, read_model
    from genofed.models.manifest import load_bundle
    from genofed.privacy.redteam_sim import Genomes

    journal = [r for r in read_journal(state) if r.get("status") == "completed"]
    if not journal:
        raise LocalInputError(f"{state}: no completed round journaled (want an aggregator "
                              "state folder, e.g. a demo's out/state/aggregator)")
    bundle = load_bundle(bundle_dir)
    g = Genomes.from_folder(cohort)
    trainer = StepTrainer(bundle)
    rdp: np.ndarray | None = None
    settings = []
    for rec in journal:
        version = int(str(rec["model_version"])) + 1
        trainer.set_weights(read_model(state, version))
        s_in = -bce(trainer.predict_logits(g.x), g.y)
        s_out = -bce(trainer.predict_logits(g.test_x), g.test_y)
        test_logits = trainer.predict_logits(g.test_x)
        p = rec.get("privacy")
        eps = delta = None
        if isinstance(p, dict):
            eps, delta = float(p["epsilon"]), float(p["delta"])
            r = np.asarray(p["rdp"], np.float64)
            rdp = r if rdp is None else rdp + r
        privacy = Privacy(eps, delta if delta is not None else 1e-5, rdp=rdp)
        a, se = auc_se(s_in, s_out)
        tprs = {str(q): tpr_at_fpr(s_in, s_out, q) for q in FPRS}
        fpr, tpr = roc_points(s_in, s_out)
        attack = {"party": "device", "calibration": "raw", "auc": a,
                  "auc_ci": normal_ci(a, se), "tpr": tprs,
                  "tpr_ci": {q: _tpr_ci(t, s_in.size) for q, t in tprs.items()},
                  "roc": (fpr.tolist(), tpr.tolist())}
        pos = g.test_y > 0.5
        m_auc, m_se = auc_se(test_logits[pos], test_logits[~pos])
        settings.append({"label": f"after round {rec['round']}", "epsilon": eps,
                         "delta": privacy.delta, "noise_multiplier": None, "bits": None,
                         **privacy.ceilings(), "model_auc": m_auc,
                         "model_auc_ci": normal_ci(m_auc, m_se),
                         "strongest_attack": "loss_threshold",
                         "attacks": {"loss_threshold": attack}, "pools": 1})
    return {"kind": "run", "description":
            f"The stored rounds of one federation ({state}): {len(journal)} completed rounds, "
            f"{g.x.shape[0]} member genomes (the devices' training data) against "
            f"{g.test_x.shape[0]} non-members (the cohort's test set); each model the "
            "aggregator released attacked with the loss threshold; intervals are DeLong's "
            "(AUC) and binomial (TPR), one federation, no seeds; with so few non-members TPR "
            "at 0.1% FPR is the TPR above the highest non-member score",
            "shape": {"name": "stored run"}, "sites": int(g.x.shape[1]),
            "genomes": int(g.x.shape[0]), "settings": settings}
