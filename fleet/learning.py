"""Does a cross-device federation of one-genome devices learn? The federated model's test AUC
against the centralized one, at the fleet's settings, rounds of `per_round` devices.

The fleet (`deploy.py`) measures what a round costs over the real broker; running one to
convergence there (tens of rounds of 1,000 devices) does not fit this machine's time. This
runs the same federation through `privacy/crossdevice.py`: every device trains its genome on
the bundle's step graph in onnxruntime with the fleet's local settings (2 epochs of SGD at lr
0.02), encodes its update with the fleet's codec (clip 10, scale 1e6, the bits the codec
picks for the round's n, no noise), the encodings are summed in the ring and decoded as the
aggregator decodes them (what unmasking the SecAgg+ sum gives it: the masks cancel exactly,
tests/unit/test_secagg.py), and the aggregator's server optimizer applies the mean. Each
round's devices are a fresh random draw from the enrolled genomes, as the aggregator's cohort
is; the centralized model is scikit-learn's L2 logistic regression on the same genomes (its
penalty by 3-fold cross-validated AUC). Held-out genomes from the same populations score both;
the AUC is reported overall and by ancestry (`sim/evaluate.py`).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed.agent.encode import encode_dosages
from genofed.sim.cohort import SimParams, build_cohort

LOCAL_EPOCHS, LOCAL_LR, CLIP, SCALE = 2, 0.02, 10.0, 1e6  # the fleet's [rounds] and [codec]


@dataclass(frozen=True)
class Learning:
    """Enrolled genomes, held-out genomes, devices a round, rounds, server optimizer."""

    genomes: int = 20_000
    test: int = 4_000
    per_round: int = 1_000
    rounds: int = 150
    sites: int = 500
    server: tuple[str, float] = ("fedadam", 0.01)
    seed: int = 3


def learning_gap(spec: Learning) -> dict[str, Any]:
    """The centralized and federated test AUCs (and by ancestry), their gap, and the AUC after
    each tenth of the rounds."""
    from genofed.agent.trainer import StepTrainer
    from genofed.aggregator.optimizers import ServerOptimizer
    from genofed.export.bundle import export_bundle
    from genofed.models.manifest import load_bundle
    from genofed.privacy.crossdevice import local_delta, plain_codec, run_federation
    from genofed.protocol.codec import choose_bits
    from genofed.sim.evaluate import auc_report, central_scores

    c = build_cohort(SimParams(devices=1, samples_per_device=spec.genomes, variants=4 * spec.sites,
                               panel_size=spec.sites, seed=spec.seed, split="iid",
                               test_samples=spec.test))
    g, af = c.devices[0], c.panel.af
    x = encode_dosages(g.dosage[:, c.panel_index], af).astype(np.float32)
    y = g.phenotype.astype(np.float32)
    tx = encode_dosages(c.test.dosage[:, c.panel_index], af).astype(np.float32)
    ty, tanc = c.test.phenotype, np.asarray(c.test.ancestry)
    with tempfile.TemporaryDirectory(prefix="genofed-learning-") as tmp:
        b = load_bundle(export_bundle("logreg", c.panel, Path(tmp) / "b", seed=spec.seed,
                                      optimizers=("sgd",), ort_training=False))
        trainer = StepTrainer(b)

        def local(w: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
            return local_delta(trainer, w, x[i:i + 1], y[i:i + 1], epochs=LOCAL_EPOCHS,
                               lr=LOCAL_LR, rng=rng)

        def report(w: np.ndarray) -> dict[str, Any]:
            trainer.set_weights(w)
            return auc_report(ty, trainer.predict_logits(tx), tanc)

        rng = np.random.default_rng(spec.seed)
        cohorts = [np.sort(rng.choice(spec.genomes, spec.per_round, replace=False)).tolist()
                   for _ in range(spec.rounds)]
        codec = plain_codec(b.layout.n_trained, CLIP, SCALE,
                            choose_bits(spec.per_round, CLIP, SCALE))
        run = run_federation(b.layout, b.layout.flatten(b.initial_params()), cohorts, local,
                             codec, server=ServerOptimizer(*spec.server), seed=spec.seed)
        federated = report(run.released[-1])
        every = max(1, spec.rounds // 10)
        curve = {r: float(report(run.released[r])["auc"])
                 for r in range(every, spec.rounds + 1, every)}
    central = auc_report(ty, central_scores(x, y, tx), tanc)
    return {"centralized_auc": central["auc"], "federated_auc": federated["auc"],
            "auc_gap": float(central["auc"]) - float(federated["auc"]),  # type: ignore[arg-type]
            "centralized_by_ancestry": central["by_ancestry"],
            "federated_by_ancestry": federated["by_ancestry"],
            "federated_ancestry_gap": federated["gap"], "auc_by_round": curve,
            "genomes": spec.genomes, "test": spec.test, "per_round": spec.per_round,
            "rounds": spec.rounds, "sites": spec.sites, "server": list(spec.server),
            "cohorts_digest": hashlib.sha256(np.array(cohorts).tobytes()).hexdigest()[:16]}

