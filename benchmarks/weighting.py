"""What each way of weighting a secure round's updates costs: test AUC against what the
aggregator learns of a device's sample count. Equal weights (the codec's choice,
`protocol/codec_mean.py`) are measured against their peers in the same run:

- `count`: w = min(n_i, 1000), the weight the earlier codec hid in the ring (and what a weight
  declared in the clear, signed and capped by the task, would be);
- `bucket`: w = the power of two below min(n_i, 1000), declared in the clear;
- `equal`: w = 1 for every device.

Cohorts (six devices, 2,000 variants, a 500-site panel, a 400-sample test set): the demo's
(`genofed demo`: 200 samples a device, seed 1, where all three rules are the same rule), and a
skewed one for cross-silo federations: devices of 1000, 500, 200, 100, 50 and 25 samples (cut
from a cohort simulated at 1,000 a device), non-IID (each device 80% from one of two
populations, alternating) and IID, three cohort seeds each, two training seeds each. Training
is the demo's (logreg, two local epochs of SGD at lr 0.02, batches of 32) through the bundle's
step graph; the aggregate is plain FedAvg (server lr 1) of the updates clipped to C = 10, in
float: the ring's rounding adds < 1e-6 a coordinate and does not depend on the weights. The
centralized logistic regression on the pooled data (scikit-learn) is the reference.

    genofed bench weighting      ->  benchmarks/results/weighting.json
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fedsim import Data, Local, ancestry_fields, bundle, cohort, data

CLIP, W_MAX, ROUNDS, REPORT = 10.0, 1000, 20, (8, 20)
SKEWED = (1000, 500, 200, 100, 50, 25)
RULES = {
    "count": lambda n: min(n, W_MAX),
    "bucket": lambda n: 1 << (min(n, W_MAX).bit_length() - 1),
    "equal": lambda n: 1,
}
LEARNS = {
    "count": "each device's count (capped at 1000): in the clear every round if declared; by "
             "differencing two rounds' totals if hidden in the ring",
    "bucket": "each device's count to within a factor of two, every round",
    "equal": "nothing",
}


def fedavg(local: Local, initial: np.ndarray, rule: str, seed: int,
           last: list[dict[str, object]]) -> list[float]:
    """Test AUC after each of ROUNDS rounds of FedAvg with weights by `rule`; last[0] is set
    to the AUC by ancestry after round REPORT[-1]."""
    rng = np.random.default_rng(seed)
    w = initial.astype(np.float32)
    weights = [RULES[rule](len(y)) for _, y in local.data.devices]
    aucs = []
    for r in range(ROUNDS):
        acc = np.zeros(w.size)
        for i, wi in enumerate(weights):
            d = local.delta(i, w, rng)
            norm = float(np.linalg.norm(d))
            acc += wi * (d * (CLIP / norm) if norm > CLIP else d)
        w = (w + acc / sum(weights)).astype(np.float32)
        aucs.append(local.auc(w))
        if r + 1 == REPORT[-1]:
            last[0] = local.by_ancestry(w)
    return aucs


def centralized(d: Data) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x = np.concatenate([x for x, _ in d.devices])
    y = np.concatenate([y for _, y in d.devices])
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    return float(roc_auc_score(d.test[1], clf.decision_function(d.test[0])))


def main() -> None:
    from genofed.cli.bench import write_results

    cases = [("demo", 200, None, "population", seed) for seed in (1,)]
    cases += [(f"skewed_{split}", 1000, SKEWED, split, seed)
              for split in ("population", "iid") for seed in (1, 2, 3)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, per_device, sizes, split, seed in cases:
            c = cohort(per_device, seed, split)
            d = data(c, sizes)
            b = bundle(c, Path(tmp) / f"{name}-{seed}", seed)
            local = Local(b, d)
            initial = b.layout.flatten(b.initial_params())
            central = centralized(d)
            for rule in RULES:
                last: list[dict[str, object]] = [{}]
                runs = [fedavg(local, initial, rule, 100 * seed + t, last) for t in (0, 1)]
                row = {"cohort": name, "seed": seed,
                       "sizes": "/".join(str(len(y)) for _, y in d.devices), "rule": rule}
                for r in REPORT:
                    row[f"auc_{r}"] = float(np.mean([a[r - 1] for a in runs]))
                row.update(ancestry_fields(f"auc_{REPORT[-1]}_run2", last[0]))
                row["centralized_auc"] = central
                row["aggregator_learns"] = LEARNS[rule]
                rows.append(row)
    summary: dict[str, object] = {}
    for name in sorted({r["cohort"] for r in rows}):
        for rule in RULES:
            for r in REPORT:
                mine = [x[f"auc_{r}"] for x in rows if x["cohort"] == name and x["rule"] == rule]
                summary[f"{name}_{rule}_auc_{r}"] = float(np.mean(mine))
        for r in REPORT:
            summary[f"{name}_equal_minus_count_auc_{r}"] = (
                summary[f"{name}_equal_auc_{r}"] - summary[f"{name}_count_auc_{r}"])  # type: ignore[operator]
    write_results("weighting", rows, summary)


if __name__ == "__main__":
    main()
