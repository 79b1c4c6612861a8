"""The red team's federations: a cohort, the bundle's own training step (onnxruntime), and
the codec of each setting (no DP: `NoNoise`; DP: Skellam calibrated for the target epsilon
per device over the rounds, no amplification), run by `crossdevice.run_federation`.

`redteam(...)` returns the report document (`report.py` writes it as JSON and HTML).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genofed.privacy.attacks import auc
from genofed.privacy.redteam import (
    Federation,
    PoolResult,
    Privacy,
    Shape,
    attack_pool,
    balanced_halves,
    statistics,
    summarize,
)

log = logging.getLogger(__name__)


@dataclass
class Genomes:
    """Standardized model inputs and phenotypes of training and test genomes."""

    x: np.ndarray
    y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    panel: object  # models.panel.Panel

    @staticmethod
    def simulate(genomes: int, sites: int, seed: int, test: int = 400) -> Genomes:
        """A cohort of `genofed simulate`'s engine (genome-wide, the default ancestry mix)."""
        from genofed.agent.encode import encode_dosages
        from genofed.sim.cohort import SimParams, build_cohort

        c = build_cohort(SimParams(devices=1, samples_per_device=genomes,
                                   variants=max(sites + sites // 4, sites + 100),
                                   panel_size=sites, seed=seed, split="iid",
                                   test_samples=test))
        g = c.devices[0]
        return Genomes(encode_dosages(g.dosage[:, c.panel_index], c.panel.af),
                       g.phenotype.astype(np.float32),
                       encode_dosages(c.test.dosage[:, c.panel_index], c.panel.af),
                       c.test.phenotype.astype(np.float32), c.panel)

    @staticmethod
    def from_folder(folder: Path) -> Genomes:
        """A `genofed simulate` (or demo) cohort folder: every device's genomes pooled (one
        genome a device in the red team's federations), read from their VCFs with pysam as
        the agent reads them, and its test set."""
        from genofed.cli.demo import load_labeled
        from genofed.errors import LocalInputError
        from genofed.models.panel import load_panel

        panel = load_panel(folder / "panel.tsv")
        dirs = sorted(p for p in (folder / "devices").iterdir() if p.is_dir()) \
            if (folder / "devices").is_dir() else []
        if not dirs or not (folder / "test" / "calls.vcf.gz").exists():
            raise LocalInputError(f"{folder}: not a cohort folder (want panel.tsv, "
                                  "devices/*/calls.vcf.gz and test/calls.vcf.gz)")
        parts = [load_labeled(d / "calls.vcf.gz", d / "phenotypes.tsv", panel) for d in dirs]
        test = load_labeled(folder / "test" / "calls.vcf.gz",
                            folder / "test" / "phenotypes.tsv", panel)
        return Genomes(np.concatenate([p.x for p in parts]),
                       np.concatenate([p.y for p in parts]), test.x, test.y, panel)


class World:
    """The bundle (logistic regression over the cohort's panel) and its training step."""

    def __init__(self, genomes: Genomes, shape: Shape, tmp: Path, *,
                 dpsgd: bool = False) -> None:
        from genofed.agent.trainer import StepTrainer
        from genofed.export.bundle import export_bundle
        from genofed.models.manifest import load_bundle

        self.g, self.shape = genomes, shape
        b = load_bundle(export_bundle("logreg", genomes.panel, tmp / "bundle",  # type: ignore[arg-type]
                                      optimizers=("sgd",), ort_training=False,
                                      dpsgd=("sgd",) if dpsgd else ()))
        self.layout, self.initial = b.layout, b.layout.flatten(b.initial_params())
        self.trainer = StepTrainer(b)
        if dpsgd:
            from genofed.agent.dpsgd import DpStepTrainer

            self.dp_trainer = DpStepTrainer(b)
        self.clinics = np.zeros((0, 0), np.int64)  # a federation's devices' genomes
        sites = genomes.x.shape[1]
        # The clip at the update's norm at zero: c |y - 1/2| ||x||, ||x||^2 ~ sites.
        self.clip = shape.steps_lr * 0.5 * float(np.sqrt(sites))

    def steps_lr(self) -> float:
        """c of Homer's statistic (`lira.homer_scores`)."""
        return self.shape.steps_lr

    def update(self, w: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
        """One device's local training on its one genome (the bundle's step graph)."""
        from genofed.privacy.crossdevice import local_delta

        return local_delta(self.trainer, w, self.g.x[i:i + 1], self.g.y[i:i + 1],
                           epochs=self.shape.epochs, lr=self.shape.lr, rng=rng)

    def codec(self, epsilon: float | None) -> tuple[object, Privacy]:
        """The round codec of a setting and what the accountant claims of it."""
        from genofed.privacy.crossdevice import device_epsilon, dp_codec, plain_codec
        from genofed.privacy.rdp import skellam_rdp
        from genofed.protocol.codec import choose_bits

        s, dim = self.shape, self.layout.n_trained
        if epsilon is None:
            scale = 1e4
            return (plain_codec(dim, self.clip, scale, choose_bits(s.devices, self.clip, scale)),
                    Privacy(None, s.delta))
        dp = dp_codec(epsilon, s.delta, rounds=s.rounds, dim=dim, clip=self.clip, n=s.devices)
        claimed, _ = device_epsilon(dp, s.delta, participations=s.rounds, rounds=s.rounds,
                                    sample_rate=1.0)
        rdp = s.rounds * skellam_rdp(l2=dp.l2, l1=dp.l1, variance=dp.n_min * dp.variance)
        return dp.pipeline, Privacy(claimed, s.delta, dp.noise_multiplier, dp.bits, rdp)

    def pool(self, p: int, codec: object) -> PoolResult:
        """Pool p (genomes [2Np, 2N(p+1))): its balanced federations, attacked."""
        from genofed.privacy.crossdevice import run_federation

        s = self.shape
        idx = np.arange(s.pool_size * p, s.pool_size * (p + 1))
        member = balanced_halves(idx.size, s.federations, np.random.default_rng([7, p]))
        x, y = self.g.x[idx], self.g.y[idx]
        stats, model_auc = [], []
        for f in range(s.federations):
            # device d trains on genomes clinics[d] (one each, cross-device)
            self.clinics = idx[member[f]].reshape(s.devices, s.per_device)
            cohort = (self.clinics[:, 0] if s.per_device == 1 else np.arange(s.devices))
            run = run_federation(self.layout, self.initial, [cohort.tolist()] * s.rounds,
                                 self.update, codec, seed=1000 * p + f)  # type: ignore[arg-type]
            fed = Federation(run.released, run.aggregates)
            stats.append(statistics(fed, x, y, self.steps_lr(),
                                    (self.g.test_x, self.g.test_y)))
            logits = self.g.test_x @ run.released[-1][:-1].astype(np.float64)
            model_auc.append(auc(logits[self.g.test_y > 0.5], logits[self.g.test_y <= 0.5]))
        res = attack_pool(stats, member)
        res.model_auc = model_auc
        return res


def redteam(genomes: Genomes, shape: Shape, epsilons: Sequence[float | None],
            tmp: Path | None = None) -> dict[str, object]:
    """Every setting (None: no DP) run on `shape.pools` pools and attacked; the report.
    Cross-silo shapes (`redteam_silo.silo_shape`) run DP-SGD in each clinic."""
    if genomes.x.shape[0] < shape.pool_size * shape.pools:
        from genofed.errors import LocalInputError

        raise LocalInputError(f"{shape.pools} pools of {shape.pool_size} genomes need "
                              f"{shape.pool_size * shape.pools}; the cohort has "
                              f"{genomes.x.shape[0]}")
    with tempfile.TemporaryDirectory() as d:
        if shape.per_device > 1:
            from genofed.privacy.redteam_silo import SiloWorld

            world: World = SiloWorld(genomes, shape, Path(tmp or d))
        else:
            world = World(genomes, shape, Path(tmp or d))
        settings = []
        for eps in epsilons:
            codec, privacy = world.codec(eps)
            log.info("red team: epsilon %s", eps)
            pools = [world.pool(p, codec) for p in range(shape.pools)]
            settings.append(summarize("no DP" if eps is None else f"epsilon {eps:g}",
                                      privacy, pools))
    return {"kind": "simulation", "shape": asdict(shape), "sites": int(genomes.x.shape[1]),
            "genomes": int(genomes.x.shape[0]), "settings": settings}
