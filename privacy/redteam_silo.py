"""The red team's cross-silo shape: each device is a clinic of many genomes, the demo's
(6 clinics x 200 genomes; 2 local epochs of SGD at lr 0.02, batches of 32; the codec's clip
10, no device-level noise), and record-level DP by DP-SGD inside each clinic's training step,
as `genofed demo --dp` runs it: the bundle's DP-SGD graph (`agent/dpsgd.py`, noise from the
OS), Poisson batches at rate 0.2, per-example clip 1, the noise multiplier the aggregator's
ledger picks so that all the rounds spend the target epsilon per record
(`aggregator/privacy.py` `PrivacyLedger.least_noise` on `privacy/sgm.py`'s curve).

A pool is 2 x clinics x genomes; each balanced half is dealt out into the clinics of one
federation. Members are records (genomes), as the unit of the privacy claim is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genofed.privacy.crossdevice import local_delta
from genofed.privacy.redteam import Privacy, Shape
from genofed.privacy.redteam_sim import Genomes, World
from genofed.protocol.privacyspec import DpSgd

CODEC_CLIP = 10.0
BATCH = 32
DPSGD_RATE = 0.2
DPSGD_CLIP = 1.0


def silo_shape(clinics: int = 6, genomes: int = 200, rounds: int = 8, *, federations: int = 16,
               pools: int = 2) -> Shape:
    """The demo's cross-silo shape (`Shape.devices` counts clinics)."""
    return Shape(name="cross-silo", devices=clinics, rounds=rounds, lr=0.02, epochs=2,
                 federations=federations, pools=pools, per_device=genomes)


class SiloWorld(World):
    """A `World` whose devices are clinics (of `shape.per_device` genomes each)."""

    def __init__(self, genomes: Genomes, shape: Shape, tmp: Path) -> None:
        super().__init__(genomes, shape, tmp, dpsgd=True)
        self.clip = CODEC_CLIP
        self.dpsgd: DpSgd | None = None

    def steps_lr(self) -> float:
        """c of Homer's statistic: steps times the learning rate (each step averages a batch)."""
        m, s = self.shape.per_device, self.shape
        if self.dpsgd is None:
            return s.lr * s.epochs * -(-m // BATCH)
        return s.lr * self.dpsgd.steps_for_epochs(s.epochs)

    def update(self, w: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
        rows = self.clinics[i]
        x, y = self.g.x[rows], self.g.y[rows]
        s = self.shape
        if self.dpsgd is None:
            return local_delta(self.trainer, w, x, y, epochs=s.epochs, lr=s.lr, rng=rng,
                               batch_size=BATCH)
        t = self.dp_trainer
        t.set_weights(w)
        t.train_dp(x, y, dp=self.dpsgd, steps=self.dpsgd.steps_for_epochs(s.epochs), lr=s.lr)
        return np.subtract(t.weights(), w, dtype=np.float64)

    def codec(self, epsilon: float | None) -> tuple[object, Privacy]:
        from genofed.aggregator.privacy import PrivacyLedger
        from genofed.privacy.crossdevice import plain_codec
        from genofed.privacy.rdp import rdp_to_epsilon
        from genofed.privacy.sgm import dpsgd_rdp
        from genofed.protocol.codec import choose_bits

        s, dim = self.shape, self.layout.n_trained
        scale = 1e4
        codec = plain_codec(dim, self.clip, scale, choose_bits(s.devices, self.clip, scale))
        if epsilon is None:
            self.dpsgd = None
            return codec, Privacy(None, s.delta)
        steps = DpSgd(DPSGD_CLIP, 1.0, DPSGD_RATE).steps_for_epochs(s.epochs)
        ledger = PrivacyLedger(epsilon, s.delta, unit="record")
        z = ledger.least_noise(lambda z: dpsgd_rdp(z, DPSGD_RATE, steps), s.rounds)
        self.dpsgd = DpSgd(DPSGD_CLIP, z, DPSGD_RATE)
        rdp = s.rounds * dpsgd_rdp(z, DPSGD_RATE, steps)
        return codec, Privacy(rdp_to_epsilon(rdp, s.delta)[0], s.delta, z, None, rdp)
