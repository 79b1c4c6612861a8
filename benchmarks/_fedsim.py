"""Shared by `weighting.py` and `poisoning.py`: a simulated cohort in memory, its logreg bundle,
and local training as the agent does it (the bundle's step graph on onnxruntime).

The demo's shape is `genofed demo`'s: `simulate(devices=6, samples_per_device=200,
variants=2000, panel_size=500, seed=1)`, a logreg bundle exported with the same seed, two local
epochs of SGD at lr 0.02 in batches of 32 (`cli/demo.py` `write_configs`). Dosages are encoded
from the simulated genotypes directly (missing -> 2p, as the agent reads them from the VCFs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.agent.encode import encode_dosages
from genofed.agent.trainer import StepTrainer
from genofed.export.bundle import export_bundle
from genofed.models.manifest import Bundle, load_bundle
from genofed.sim.cohort import Cohort, SimParams, build_cohort

EPOCHS, BATCH, LR = 2, 32, 0.02  # the demo's [rounds]


@dataclass(frozen=True)
class Data:
    """Each device's (x, y) and the held-out test set."""

    devices: tuple[tuple[np.ndarray, np.ndarray], ...]
    test: tuple[np.ndarray, np.ndarray]
    test_ancestry: np.ndarray | None = None  # str per test sample


def cohort(samples_per_device: int, seed: int, split: str = "population") -> Cohort:
    """Six devices of `samples_per_device` samples (2,000 variants, a 500-site panel)."""
    return build_cohort(SimParams(devices=6, samples_per_device=samples_per_device,
                                  variants=2000, panel_size=500, seed=seed, split=split))


def data(c: Cohort, sizes: Sequence[int] | None = None) -> Data:
    """The cohort's devices as model inputs, device i cut to its first sizes[i] samples."""
    af = c.panel.af

    def xy(g: object) -> tuple[np.ndarray, np.ndarray]:
        return (encode_dosages(g.dosage[:, c.panel_index], af),  # type: ignore[attr-defined]
                g.phenotype.astype(np.float32))  # type: ignore[attr-defined]

    devs = [xy(g) for g in c.devices]
    if sizes is not None:
        devs = [(x[:s], y[:s]) for (x, y), s in zip(devs, sizes, strict=True)]
    return Data(tuple(devs), xy(c.test), np.array(c.test.ancestry))


def bundle(c: Cohort, out: Path, seed: int) -> Bundle:
    """The logreg bundle for the cohort's panel (SGD only)."""
    return load_bundle(export_bundle("logreg", c.panel, out, seed=seed, optimizers=("sgd",),
                                     ort_training=False))


class Local:
    """Local training of every device from given weights, and the test AUC of a model."""

    def __init__(self, b: Bundle, d: Data) -> None:
        self.trainer = StepTrainer(b)
        self.data = d

    def delta(self, i: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Device i's update from `weights` (float64, every coordinate)."""
        x, y = self.data.devices[i]
        self.trainer.set_weights(weights)
        self.trainer.train(x, y, epochs=EPOCHS, batch_size=BATCH, lr=LR, rng=rng)
        return np.subtract(self.trainer.weights(), weights, dtype=np.float64)

    def auc(self, weights: np.ndarray) -> float:
        from sklearn.metrics import roc_auc_score

        x, y = self.data.test
        self.trainer.set_weights(np.asarray(weights, np.float32))
        return float(roc_auc_score(y, self.trainer.predict_logits(x)))

    def by_ancestry(self, weights: np.ndarray) -> dict[str, object]:
        """The test AUC overall and by ancestry, with the best-worst gap named."""
        from genofed.sim.evaluate import auc_report

        x, y = self.data.test
        assert self.data.test_ancestry is not None
        self.trainer.set_weights(np.asarray(weights, np.float32))
        return auc_report(y, self.trainer.predict_logits(x), self.data.test_ancestry)


def ancestry_fields(prefix: str, report: dict[str, object]) -> dict[str, object]:
    """Flat row fields of an AUC-by-ancestry report: per ancestry, worst, gap."""
    by = report["by_ancestry"]
    assert isinstance(by, dict)
    out: dict[str, object] = {f"{prefix}_{k}": v for k, v in by.items()}
    out[f"{prefix}_worst"] = report["worst"]
    out[f"{prefix}_gap"] = report["gap"]
    return out
