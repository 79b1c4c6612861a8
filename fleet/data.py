"""The fleet's genomes: one per device, drawn by the simulator (`sim/cohort.py`) in memory,
with a held-out test set, and the logistic-regression bundle for their panel.

The simulator's genotypes are encoded as the agent encodes what it reads from a VCF
(`agent/encode.py`, missing -> 2p); the fleet skips writing and reading a thousand one-sample
VCFs, which the VCF benchmarks and tests cover on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.agent.encode import encode_dosages
from genofed.sim.cohort import SimParams, build_cohort


@dataclass(frozen=True)
class FleetData:
    x: np.ndarray  # [devices, sites] float32
    y: np.ndarray  # [devices] float32
    test_x: np.ndarray
    test_y: np.ndarray
    bundle: Path


def one_genome_devices(bundle_out: Path, devices: int, seed: int, *, variants: int = 2000,
                       panel_size: int = 500, test_samples: int = 400) -> FleetData:
    """`devices` genomes, one a device, a test set, and their logreg bundle (needs torch: the
    coordinator exports it; the device processes never import it)."""
    from genofed.export.bundle import export_bundle

    c = build_cohort(SimParams(devices=devices, samples_per_device=1, variants=variants,
                               panel_size=panel_size, seed=seed, test_samples=test_samples))
    af = c.panel.af

    def enc(g: object) -> np.ndarray:
        return encode_dosages(g.dosage[:, c.panel_index], af)  # type: ignore[attr-defined]

    x = np.concatenate([enc(g) for g in c.devices]).astype(np.float32)
    y = np.concatenate([g.phenotype for g in c.devices]).astype(np.float32)
    bundle = export_bundle("logreg", c.panel, bundle_out, seed=seed, optimizers=("sgd",),
                           ort_training=False)
    return FleetData(x, y, enc(c.test).astype(np.float32),
                     c.test.phenotype.astype(np.float32), bundle)
