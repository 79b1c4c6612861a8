"""AUC by ancestry on a multi-ancestry cohort: federated against centralized and against a model
trained on one ancestry only, and federated transfer learning from a polygenic score.

Cohort (`genofed simulate` defaults otherwise: h2 0.5, 5% causal, genetic correlation 0.8,
prevalence 0.3): six clinics of 500 genomes, each 80% one ancestry (AFR, EUR, EAS, AMR in equal
shares of clinics, the rest mixed), a 1,000-site genome-wide panel, a held-out test set of 40,000
(10,000 per ancestry, ANCESTRY_TEST: each AUC's standard error is ~0.025 at 400 a ancestry,
enough to make the best-worst gap mostly noise, and ~0.012 at 2,000, as wide as the 0.01
tolerance of the rounds-to-reach figures), and an external EUR cohort of 4,000
that a PGS Catalog score is trained on (`sim/score.py`). Models: scikit-learn's L2 logistic
regression on the pooled clinics, its penalty chosen by 3-fold cross-validated AUC
(centralized; unpenalized it overfits 1,000 sites on 3,000 genomes and falls below one round
of FedAvg), the same on the clinics' EUR genomes only (single-ancestry), and FedAvg of the
demo's local training (logreg step graph on onnxruntime, two epochs of SGD at lr 0.02,
batches of 32, updates clipped to 10) for ROUNDS rounds, from zero and from the score mapped
by `genofed export --init-from` (`export/score_init.py`).

Figures: AUC overall and per ancestry; the gap between best- and worst-served ancestry; the
share of the EUR-only model's disadvantage the federated model closes, both readings of
`sim.evaluate.gap_closure` (its best-worst gap, beside the centralized model's own closure
as the reference; and its shortfall against the centralized model on its worst-served
ancestry); rounds until the federated model comes within TOL of the centralized AUC, overall
and per ancestry, from the score and from zero. Two cohort seeds.

    genofed bench ancestry_transfer      ->  benchmarks/results/ancestry_transfer.json
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fedsim import Data, Local, bundle, data

ROUNDS, CLIP, TOL, SEEDS = 30, 10.0, 0.01, (1, 2)
TEST = int(os.environ.get("ANCESTRY_TEST", "40000"))  # 10,000 a ancestry: see the module doc


def fedavg(local: Local, initial: np.ndarray, seed: int) -> list[dict[str, object]]:
    """AUC by ancestry after each of ROUNDS rounds of FedAvg (equal weights)."""
    rng = np.random.default_rng(seed)
    w = initial.astype(np.float32)
    out = []
    for _ in range(ROUNDS):
        acc = np.zeros(w.size)
        for i in range(len(local.data.devices)):
            d = local.delta(i, w, rng)
            norm = float(np.linalg.norm(d))
            acc += d * (CLIP / norm) if norm > CLIP else d
        w = (w + acc / len(local.data.devices)).astype(np.float32)
        out.append(local.by_ancestry(w))
    return out


def central(d: Data, keep: np.ndarray | None = None) -> dict[str, object]:
    from genofed.sim.evaluate import auc_report, central_scores

    x = np.concatenate([x for x, _ in d.devices])
    y = np.concatenate([y for _, y in d.devices])
    if keep is not None:
        x, y = x[keep], y[keep]
    assert d.test_ancestry is not None
    return auc_report(d.test[1], central_scores(x, y, d.test[0]), d.test_ancestry)


def reach(curve: list[dict[str, object]], target: dict[str, object], key: str | None) -> int | None:
    """First round (1-based) within TOL of the target's AUC (overall, or ancestry `key`)."""
    def val(r: dict[str, object]) -> float:
        by = r["by_ancestry"]
        assert isinstance(by, dict)
        return float(r["auc"] if key is None else by[key])  # type: ignore[arg-type]

    goal = val(target) - TOL
    return next((i + 1 for i, r in enumerate(curve) if val(r) >= goal), None)


def one_seed(seed: int, tmp: Path) -> list[dict[str, object]]:
    from genofed.export.score_init import params_from_score
    from genofed.models.pgs import load_pgs
    from genofed.sim.cohort import SimParams, build_cohort
    from genofed.sim.evaluate import gap_closure
    from genofed.sim.score import train_score, write_score

    p = SimParams(devices=6, samples_per_device=500, variants=1500, panel_size=1000, seed=seed,
                  test_samples=TEST, reference_samples=500, external_samples=4000)
    c = build_cohort(p)
    r = c.result
    weights = train_score(c.panel, r.external_panel, r.phenotype[p.n_phenotyped +
                                                                 p.reference_samples:])
    score = load_pgs(write_score(tmp / f"score{seed}.txt", c.panel, weights, ancestry="EUR",
                                 n=p.external_samples))
    d = data(c)
    b = bundle(c, tmp / f"b{seed}", seed)
    local = Local(b, d)
    zero = b.layout.flatten(b.initial_params())
    init, _ = params_from_score("logreg", c.panel, score)
    from_score = b.layout.flatten(init)
    eur = np.concatenate([g.ancestry for g in c.devices]) == "EUR"
    reports = {"centralized": central(d), "EUR_only": central(d, eur)}
    curves = {"federated_zero": fedavg(local, zero, seed), "federated_score": fedavg(
        local, from_score, seed)}
    reports["score_alone"] = local.by_ancestry(from_score)
    reports.update({k: v[-1] for k, v in curves.items()})
    rows = []
    names = list(reports["centralized"]["by_ancestry"])  # type: ignore[call-overload]
    for model, rep in reports.items():
        row: dict[str, object] = {"seed": seed, "model": model, "auc": rep["auc"]}
        row.update({k: v for k, v in rep["by_ancestry"].items()})  # type: ignore[attr-defined]
        row["worst"], row["gap"] = rep["worst"], rep["gap"]
        if model.startswith("federated"):
            c = gap_closure(rep, reports["centralized"], reports["EUR_only"])
            row["closes_EUR_only_gap"], row["recovers_EUR_only_shortfall"] = (
                c["spread"], c["shortfall"])
        if model in curves:
            for key in (None, *names):
                row[f"rounds_to_central_{key or 'all'}"] = reach(curves[model],
                                                                 reports["centralized"], key)
        rows.append(row)
    return rows


def main() -> None:
    from genofed.cli.bench import write_results

    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for s in SEEDS for r in one_seed(s, Path(tmp))]

    def mean(model: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["model"] == model]))  # type: ignore[misc]

    summary: dict[str, object] = {}
    for model in ("centralized", "EUR_only", "federated_zero", "federated_score",
                  "score_alone"):
        summary[f"{model}_auc"] = mean(model, "auc")
        summary[f"{model}_gap"] = mean(model, "gap")
    summary["federated_closes_of_EUR_only_gap"] = 1 - mean("federated_zero", "gap") / mean(
        "EUR_only", "gap")
    summary["centralized_closes_of_EUR_only_gap"] = 1 - mean("centralized", "gap") / mean(
        "EUR_only", "gap")
    summary["federated_recovers_of_EUR_only_shortfall"] = mean("federated_zero",
                                                               "recovers_EUR_only_shortfall")
    for model in ("federated_zero", "federated_score"):
        for r in rows:
            if r["model"] == model:
                for k, v in r.items():
                    if k.startswith("rounds_to_central"):
                        summary[f"{model}_{k}_seed{r['seed']}"] = v
    write_results("ancestry_transfer", rows, summary)


if __name__ == "__main__":
    main()
