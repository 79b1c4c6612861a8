"""What one poisoning device can still do to a secure round under the aggregate check
(`protocol/codec_mean.py`), on the demo's shape, each attack against the honest round it
replaces in the same run.

The whole secure round runs in memory (`aggregator/simulate.py`: the aggregator's core, the
codec, SecAgg+ on every device, the check) with the demo's six devices of 200 samples, logreg,
two local epochs of SGD at lr 0.02 (`_fedsim.py`), FedAvg with server lr 1, 11 completed rounds.
After seven honest rounds, device dev005 sends in round 7 one of the poisonings of
`tests/support/poison.py` instead of its honest encoding and is honest after: skip-clip,
crafted-ring, negative-weight, inflated-weight (each caught), within-bound (a vector of norm
0.9 n C against its own update) and within-bound-flip (the same against the global model it
was sent: the most harmful input that passes). For each: whether round 7 aborted; the test AUC
before it, after it, and at the end (three or four honest rounds later); how far round 7 moved
the model (`move`; the honest round 7 moves it `honest_move`), and how far from where the
honest round would have put it (`shift`), also as a multiple of one honest device's share of
the mean (||clip(delta_i)|| / n, averaged over the devices). The within-bound attacks run at
the demo's clip C = 10 and at tighter clips; the `honest` rows give what each clip costs when
nobody attacks.

    genofed bench poisoning      ->  benchmarks/results/poisoning.json
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _fedsim import Local, ancestry_fields, bundle, cohort, data
from support.poison import KINDS, poisoned

from genofed.aggregator.cohort import CohortPolicy
from genofed.aggregator.config import AggregatorConfig, CodecSection, RoundsSection
from genofed.aggregator.rounds import ModelSpec
from genofed.aggregator.simulate import Simulation, clipped_mean, devices, seeded
from genofed.protocol.schema import SecureTask

N, ROUNDS, ATTACK_ROUND, ATTACKER, SCALE = 6, 11, 7, "dev005", 1e6
CLIPS = (10.0, 1.0, 0.5, 0.25)


def run(local: Local, model: ModelSpec, clip: float, kind: str | None) -> dict[str, object]:
    """One federation; `kind` poisons round ATTACK_ROUND (None: all honest)."""
    cfg = AggregatorConfig(
        federation="bench", bundle=Path("unused"), state_dir=Path("unused"),
        rounds=RoundsSection(rounds=ROUNDS, stage_timeout_s=60.0, retry_s=1.0),
        cohort=CohortPolicy(min_participants=N, max_participants=N),
        codec=CodecSection(clip=clip, scale=SCALE))

    def update(device: str, round_: int, weights: np.ndarray) -> np.ndarray:
        i = int(device[3:])
        return local.delta(i, weights, np.random.default_rng([round_, i]))

    def tamper(device: str, task: SecureTask, model: np.ndarray, trained: np.ndarray,
               rng: np.random.Generator) -> np.ndarray | None:
        if kind is None or task.round != ATTACK_ROUND:
            return None
        return poisoned(kind, task, model, trained)

    sim = Simulation(cfg, model, devices(N, update, seed=3, tamper={ATTACKER: tamper}),
                     seeded(3))
    sim.run()
    models = {0: model.initial}
    models.update({j.model[0]: j.model[1] for j in sim.journal if j.model is not None})
    by_round = {j.record.round: j for j in sim.journal}
    attacked = by_round[ATTACK_ROUND]
    after = models[attacked.model[0]] if attacked.model else models[ATTACK_ROUND]
    row: dict[str, object] = {
        "attack": kind or "honest", "clip": clip, "round_7": attacked.record.status,
        "auc_before": local.auc(models[ATTACK_ROUND]), "auc_after": local.auc(after),
        "auc_end": local.auc(models[max(models)]),
        **ancestry_fields("auc_end", local.by_ancestry(models[max(models)]))}
    keep = model.layout.keep
    ups = sim.updates[ATTACK_ROUND]
    honest_mean = clipped_mean(ups, keep, clip)
    share = float(np.mean([np.linalg.norm(clipped_mean({d: u}, keep, clip))
                           for d, u in ups.items()])) / N
    row["honest_move"] = float(np.linalg.norm(honest_mean))
    row["one_honest_share"] = share
    if attacked.update is None:  # aborted: the model stays, the honest round is lost
        row["move"], row["shift"], row["shift_per_honest_share"] = 0.0, None, None
    else:
        row["move"] = float(np.linalg.norm(attacked.update))
        row["shift"] = float(np.linalg.norm(attacked.update - honest_mean))
        row["shift_per_honest_share"] = row["shift"] / share  # type: ignore[operator]
    row["model_norm_before"] = float(np.linalg.norm(models[ATTACK_ROUND]))
    return row


def main() -> None:
    from genofed.cli.bench import write_results

    c = cohort(200, 1)
    with tempfile.TemporaryDirectory() as tmp:
        b = bundle(c, Path(tmp) / "demo", 1)
        local = Local(b, data(c))
        model = ModelSpec.of(b)
        rows = [run(local, model, 10.0, kind) for kind in (None, *KINDS)]
        for clip in CLIPS[1:]:
            rows += [run(local, model, clip, kind)
                     for kind in (None, "within-bound", "within-bound-flip")]
    summary: dict[str, object] = {}
    for r in rows:
        key = f"{r['attack']}_C{r['clip']:g}"
        summary[f"{key}_auc_after"] = r["auc_after"]
        summary[f"{key}_auc_end_worst_ancestry"] = r["auc_end_worst"]
        summary[f"{key}_auc_end_ancestry_gap"] = r["auc_end_gap"]
        if r["attack"] != "honest":
            summary[f"{key}_round"] = r["round_7"]
            summary[f"{key}_shift_per_honest_share"] = r["shift_per_honest_share"]
    write_results("poisoning", rows, summary)


if __name__ == "__main__":
    main()
