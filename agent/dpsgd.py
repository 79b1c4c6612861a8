"""Record-level DP-SGD on the device: a bundle's DP-SGD step graph, fed noise and batches drawn
from the operating system's cryptographic randomness (numpy only, no torch).

A clinic (one device, many genomes) trains with `DpStepTrainer.train_dp`: every step takes a
Poisson-sampled batch (each example independently with probability `sample_rate`, the batch
size varying), and the graph (genofed.export.dpsgd) clips each example's gradient to `clip`,
sums, adds `noise_multiplier * clip` times the standard normals fed in, divides by the
expected batch `sample_rate * n` and updates, as Opacus does. What a run used (`DpSgdSpend`:
noise multiplier, sample rate, steps) is exactly what the accountant needs: the ledger counts
it as SelfComposedDpEvent(PoissonSampledDpEvent(sample_rate, GaussianDpEvent(noise_multiplier)),
steps) of dp-accounting, per record of this device's data.

Randomness. Both the noise and the batch membership come from the operating system's
cryptographic randomness, fresh for every step (`fresh_bytes`: a new 256-bit key from
`os.urandom` for each draw, expanded by libsodium's ChaCha20):
- not ONNX's RandomNormal: its `seed` attribute would be a constant in a graph every device and
  the aggregator hold, so anyone could regenerate and subtract the noise; left unseeded,
  onnxruntime draws from its own non-cryptographic generator, seeded from the system clock when
  the process starts (core/framework/random_seed.cc). Noise fed as an input also lets a test
  feed Opacus the very same noise.
- not numpy's default generator (PCG64): it is not a cryptographic generator (its state can be
  recovered from its outputs), and any seed is a number someone could learn or guess.
- the batch membership is secret too: amplification by sampling assumes nobody sees who was
  drawn, and an empty batch still takes a step (noise only), since skipping it would reveal it.
Normals come by Marsaglia's polar method on 32-bit coordinates, in float64, then rounded to
float32. Known limit: floating-point samples leak through their low bits in principle (Mironov
2012 for Laplace; Jin et al. 2021, arXiv 2112.05307, for Opacus's Gaussian, whose
`secure_mode` sums 4 normals against it); this module does not.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genofed.agent.trainer import StepTrainer
from genofed.errors import LocalInputError
from genofed.models.manifest import INPUT_NORM, Bundle, GraphSpec
from genofed.protocol.privacyspec import DpSgd

log = logging.getLogger(__name__)

RandBytes = Callable[[int], bytes]
_TWO_53 = float(1 << 53)


@dataclass(frozen=True)
class DpSgdSpend:
    """What one run of DP-SGD used, for the privacy ledgers (per record of this device)."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    clip: float
    examples: int
    sampling: str = "poisson"

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return asdict(self)


def fresh_bytes(n: int) -> bytes:
    """n cryptographically random bytes: libsodium's ChaCha20 stream under a fresh 256-bit key
    from os.urandom (`randombytes_buf_deterministic`). The key is new for every call and never
    kept; the stream is what the kernel's generator would give, at about twice its speed for
    the megabytes one step of a larger model needs."""
    from nacl.utils import randombytes_deterministic

    return randombytes_deterministic(n, os.urandom(32))


def uniforms(n: int, randbytes: RandBytes = fresh_bytes) -> np.ndarray:
    """n float64 uniforms on [0, 1), 52 random bits each (the mantissa of a double in [1, 2),
    then minus 1: exact, and faster than converting integers)."""
    raw = np.frombuffer(randbytes(8 * n), dtype="<u8", count=n)
    u = ((raw >> np.uint64(12)) | np.uint64(0x3FF0000000000000)).view(np.float64)
    u -= 1.0
    return u


def standard_normals(n: int, randbytes: RandBytes = fresh_bytes) -> np.ndarray:
    """n float64 standard normals from cryptographic bytes, by Marsaglia's polar method.

    Points (v1, v2) uniform on a 2^32 x 2^32 grid of [-1, 1)^2 are kept inside the unit disk
    (pi/4 of them) and give two normals each, v * sqrt(-2 ln s / s) with s = |v|^2. Not
    Box-Muller: its cos and sin cost more than the bytes the rejections waste, and a step of
    the 10^4-site MLP draws 320,000 normals. 32-bit coordinates resolve a normal finer than
    the float32 it becomes, and reach out to 9 standard deviations.
    """
    m = (n + 1) // 2  # pairs
    out = np.empty(2 * m)
    got = 0
    while got < m:
        k = int((m - got) * 1.3) + 64  # 1 / (pi / 4) = 1.27 draws per kept pair
        v = np.frombuffer(randbytes(8 * k), dtype="<i4").astype(np.float64)
        v *= 2.0 ** -31
        v1, v2 = v[:k], v[k:]
        s = v1 * v1 + v2 * v2
        ok = np.flatnonzero((s < 1.0) & (s > 0.0))[:m - got]
        s = s[ok]
        f = np.sqrt(np.log(s) * -2.0 / s)
        take = len(ok)
        np.multiply(v1[ok], f, out=out[got:got + take])
        np.multiply(v2[ok], f, out=out[m + got:m + got + take])
        got += take
    return out[:n]


def poisson_sample(n: int, rate: float, randbytes: RandBytes = fresh_bytes) -> np.ndarray:
    """Indices of range(n), each kept independently with probability `rate`."""
    return np.flatnonzero(uniforms(n, randbytes) < rate)


class DpStepTrainer(StepTrainer):
    """Trains through the bundle's DP-SGD step graph of one optimizer (see the module doc).

    `randbytes` is the randomness source (`fresh_bytes`; tests may pass a fixed one). The plain
    `train` is refused: a DP trainer only trains by `train_dp`, which sets clip, noise and the
    expected batch before any step.
    """

    def __init__(self, bundle: Bundle, *, threads: int = 1, optimizer: str = "sgd",
                 randbytes: RandBytes = fresh_bytes) -> None:
        self._randbytes = randbytes
        self._noise = np.zeros(bundle.n_params, np.float32)
        self._scalars = {k: np.zeros((), np.float32)
                         for k in ("clip", "noise_multiplier", "expected_batch")}
        self._dp: DpSgd | None = None
        self._batch_sqnorm: np.ndarray | None = None  # train_dp's, for the next step only
        super().__init__(bundle, threads=threads, optimizer=optimizer)
        self._kept = np.flatnonzero(self.layout.keep)
        # Logistic regression: the graph takes each example's masked squared input norm
        # (genofed.export.dpsgd), computed here once for all the examples of a run.
        self._norm_mask = self._mask[self._specs[0].name].reshape(-1) \
            if INPUT_NORM in self._graph.inputs else None

    def _step_graph(self, optimizer: str) -> GraphSpec:
        if optimizer not in self.bundle.dpsgd:
            raise LocalInputError(f"bundle {self.bundle.path}: no DP-SGD step graph for "
                                  f"optimizer {optimizer!r} (has "
                                  f"{', '.join(self.bundle.dpsgd) or 'none'}; export --dpsgd)")
        return self.bundle.dpsgd[optimizer]

    def _extra_inputs(self) -> dict[str, np.ndarray]:
        noise = {f"noise_{k}": v for k, v in self.layout.tensors(self._noise).items()}
        return noise | self._scalars

    def train(self, *args: Any, **kwargs: Any) -> list[float]:
        raise LocalInputError("trainer: a DP-SGD trainer trains with train_dp (clip, noise "
                              "and sampling set), not train")

    def train_dp(self, x: np.ndarray, y: np.ndarray, *, dp: DpSgd, steps: int, lr: float,
                 interrupt: Callable[[], bool] | None = None
                 ) -> tuple[list[float], DpSgdSpend]:
        """`steps` DP-SGD steps on Poisson-sampled batches of (x, y).

        Returns the losses of the steps that had examples (local diagnostics: they are not
        private and never leave the device) and what the run spent. `interrupt` is asked after
        every step; the spend counts the steps that ran.
        """
        x32, y32 = self._check_xy(x, y)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise LocalInputError(f"trainer: steps must be an integer >= 0, got {steps!r}")
        n = x32.shape[0]
        sqnorm = self.input_sqnorm(x32) if self.feeds_input_norms else None
        self._dp = dp
        self._scalars["clip"][...] = dp.clip
        self._scalars["noise_multiplier"][...] = dp.noise_multiplier
        self._scalars["expected_batch"][...] = dp.sample_rate * n  # Opacus: int(q n)
        losses: list[float] = []
        done = 0
        while done < steps:
            idx = poisson_sample(n, dp.sample_rate, self._randbytes)
            done += 1
            if len(idx):
                self.hold_input_norms(None if sqnorm is None else sqnorm[idx])
                try:
                    losses.append(self.step(x32[idx], y32[idx], lr))
                finally:
                    self.hold_input_norms(None)
            else:
                self._empty_step(lr)
            if interrupt is not None and interrupt():
                log.info("DP-SGD interrupted after %d of %d steps", done, steps)
                break
        spend = DpSgdSpend(noise_multiplier=dp.noise_multiplier, sample_rate=dp.sample_rate,
                           steps=done, clip=dp.clip, examples=n)
        log.debug("DP-SGD: %d steps on %d examples, %d empty batches", done, n,
                  done - len(losses))
        return losses, spend

    def _empty_step(self, lr: float) -> None:
        """A step on an empty batch: the noise alone. onnxruntime's Gemm refuses a batch of 0,
        so the graph gets one public example whose gradient is 0: x = 0 and y = sigmoid of the
        current model's logit at 0 (the logit's error, hence every per-example gradient, is 0
        up to float32 rounding, and it depends on no record)."""
        x0 = np.zeros((1, self.n_sites), np.float32)
        z = float(self.predict_logits(x0)[0])
        y0 = np.array([1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0], np.float32)
        self.step(x0, y0, lr)

    @property
    def feeds_input_norms(self) -> bool:
        """Whether the step graph takes the batch's input norms (logistic regression)."""
        return self._norm_mask is not None

    def hold_input_norms(self, sqnorm: np.ndarray | None) -> None:
        """The input norms of the batch the next steps take (`input_sqnorm` of exactly that
        batch), or None: each step computes them from its batch."""
        self._batch_sqnorm = sqnorm

    def input_sqnorm(self, x: np.ndarray) -> np.ndarray:
        """Each example's squared norm of x under the weight's mask, sum_j M_j x_ij^2 (what
        a logistic regression's DP step takes as `x_sqnorm`), in row blocks so that the
        square of a large x is never held whole."""
        assert self._norm_mask is not None
        out = np.empty(x.shape[0], np.float32)
        for lo in range(0, x.shape[0], 256):
            block = x[lo:lo + 256]
            out[lo:lo + 256] = np.square(block, dtype=np.float32) @ self._norm_mask
        return out

    def _batch_inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._norm_mask is None:
            return {}
        # train_dp's precomputed norms of exactly this batch, else computed from it here
        fed = self._batch_sqnorm
        return {INPUT_NORM: fed if fed is not None else self.input_sqnorm(x)}

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        if self._dp is None:
            raise LocalInputError("trainer: a DP-SGD step needs train_dp's parameters")
        # Only the trained coordinates draw noise (the graph masks the rest anyway).
        z = standard_normals(self._kept.size, self._randbytes)
        if self._kept.size == self._noise.size:
            self._noise[...] = z
        else:
            self._noise[self._kept] = z
        return super()._step(x, y, lr)
