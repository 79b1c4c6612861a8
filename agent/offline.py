"""`genofed train`: local epochs on a bundle, offline, with checkpoint and resume.

Features come from `genofed features` (an .npz of dosages at the bundle's panel sites), labels
from a phenotype TSV; samples are joined by name. After every epoch the trainer's state, the
epoch count and the shuffling RNG go to the checkpoint, so an interrupted run resumes where it
stopped and ends bit for bit where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.agent.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from genofed.agent.encode import encode_dosages
from genofed.agent.phenotypes import read_phenotypes
from genofed.agent.trainer import Trainer
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Labeled:
    """Encoded inputs and 0/1 labels of the samples that have both."""

    x: np.ndarray
    y: np.ndarray
    samples: tuple[str, ...]


def load_training_data(bundle: Bundle, features: Path, labels: Path) -> Labeled:
    """Dosages from `genofed features` joined with phenotypes, encoded for the bundle."""
    from genofed.agent.vcf import load_npz

    panel = bundle.panel()
    dos = load_npz(features)
    if tuple(dos.site_ids) != tuple(panel.ids):
        raise LocalInputError(f"{features}: its {len(dos.site_ids)} sites are not the bundle's "
                              f"panel ({len(panel)} sites); run `genofed features` with the "
                              "bundle's panel.tsv")
    pheno = read_phenotypes(labels)
    rows = [i for i, s in enumerate(dos.samples) if s in pheno]
    if not rows:
        raise LocalInputError(f"{labels}: none of the {len(dos.samples)} samples of {features} "
                              "has a phenotype")
    return Labeled(x=encode_dosages(dos.dosage[rows], panel.af),
                   y=np.array([pheno[dos.samples[i]] for i in rows], np.float32),
                   samples=tuple(dos.samples[i] for i in rows))


def train_epochs(trainer: Trainer, x: np.ndarray, y: np.ndarray, *, epochs: int,
                 batch_size: int, lr: float, seed: int,
                 checkpoint: Path | None = None) -> list[float]:
    """Run `epochs` epochs, resuming from `checkpoint` if it exists and saving it after each.

    Returns the loss of every step since the start of the run (resumed steps included).
    """
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    done = 0
    if checkpoint is not None and checkpoint.exists():
        ck = load_checkpoint(checkpoint, trainer.bundle)
        if ck.optimizer != trainer.optimizer:
            raise LocalInputError(f"{checkpoint}: checkpoint is for optimizer {ck.optimizer}, "
                                  f"this run uses {trainer.optimizer}")
        trainer.load_state_dict(ck.arrays)
        rng.bit_generator.state = ck.rng_state
        done, losses = ck.epoch, list(ck.losses)
        log.info("resumed from %s after epoch %d", checkpoint, done)
    for epoch in range(done, epochs):
        losses += trainer.train(x, y, epochs=1, batch_size=batch_size, lr=lr, rng=rng)
        if checkpoint is not None:
            save_checkpoint(checkpoint, trainer.bundle, Checkpoint(
                arrays=trainer.state_dict(), optimizer=trainer.optimizer, epoch=epoch + 1,
                losses=losses, rng_state=dict(rng.bit_generator.state)))
        per_epoch = math.ceil(len(y) / batch_size)
        log.info("epoch %d: mean step loss %.4f", epoch + 1, float(np.mean(losses[-per_epoch:])))
    return losses
