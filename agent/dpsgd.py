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

Randomness. Both the noise and the batch membership come from `os.urandom` (the kernel's
CSPRNG), fresh for every step:
- not ONNX's RandomNormal: its `seed` attribute would be a constant in a graph every device and
  the aggregator hold, so anyone could regenerate and subtract the noise; left unseeded,
  onnxruntime draws from its own non-cryptographic generator, seeded from the clock. Noise fed
  as an input also lets a test feed Opacus the very same noise.
- not numpy's default generator (PCG64): it is not a cryptographic generator (its state can be
  recovered from its outputs), and any seed is a number someone could learn or guess.
- the batch membership is secret too: amplification by sampling assumes nobody sees who was
  drawn, and an empty batch still takes a step (noise only), since skipping it would reveal it.
Normals are Box-Muller on 53-bit uniforms, in float64, then rounded to float32. Known limit:
floating-point Gaussian samples leak through their low bits in principle (Mironov 2012;
Opacus's `secure_mode` sums 4 normals against it); this module does not.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genofed.agent.trainer import StepTrainer
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, GraphSpec

log = logging.getLogger(__name__)

RandBytes = Callable[[int], bytes]
_TWO_53 = float(1 << 53)


@dataclass(frozen=True)
class DpSgd:
    """A round's DP-SGD parameters: per-example clip norm, noise multiplier (noise std over the
    clip) and Poisson sample rate. Validated on construction."""

    clip: float
    noise_multiplier: float
    sample_rate: float

    def __post_init__(self) -> None:
        for name in ("clip", "noise_multiplier", "sample_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise LocalInputError(f"dpsgd: {name} must be a finite number, got {v!r}")
        if self.clip <= 0:
            raise LocalInputError(f"dpsgd: clip must be > 0, got {self.clip}")
        if self.noise_multiplier < 0:
            raise LocalInputError(f"dpsgd: noise_multiplier must be >= 0, got "
                                  f"{self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise LocalInputError(f"dpsgd: sample_rate must be in (0, 1], got "
                                  f"{self.sample_rate}")

    def to_json(self) -> dict[str, float]:
        """The parameters as a JSON object."""
        return {"clip": float(self.clip), "noise_multiplier": float(self.noise_multiplier),
                "sample_rate": float(self.sample_rate)}

    @classmethod
    def from_json(cls, raw: Any) -> DpSgd:
        """Parse `to_json`'s object; one-line LocalInputError on anything else."""
        keys = {"clip", "noise_multiplier", "sample_rate"}
        if not isinstance(raw, Mapping) or set(raw) != keys:
            got = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
            raise LocalInputError(f"dpsgd: want an object with keys {sorted(keys)}, got {got}")
        return cls(clip=raw["clip"], noise_multiplier=raw["noise_multiplier"],
                   sample_rate=raw["sample_rate"])

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps that make `epochs` passes in expectation (Opacus: an epoch is 1/q batches)."""
        if not (math.isfinite(epochs) and epochs >= 0):
            raise LocalInputError(f"dpsgd: epochs must be >= 0, got {epochs}")
        return round(epochs / self.sample_rate)


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


def uniforms(n: int, randbytes: RandBytes = os.urandom) -> np.ndarray:
    """n float64 uniforms on [0, 1), 53 random bits each."""
    raw = np.frombuffer(randbytes(8 * n), dtype="<u8", count=n)
    return (raw >> np.uint64(11)).astype(np.float64) / _TWO_53


def standard_normals(n: int, randbytes: RandBytes = os.urandom) -> np.ndarray:
    """n float64 standard normals by Box-Muller from cryptographic bytes."""
    m = (n + 1) // 2
    u = uniforms(2 * m, randbytes)
    r = np.sqrt(-2.0 * np.log1p(-u[:m]))  # 1 - u in (0, 1]: log never sees 0
    t = (2.0 * np.pi) * u[m:]
    return np.concatenate((r * np.cos(t), r * np.sin(t)))[:n]


def poisson_sample(n: int, rate: float, randbytes: RandBytes = os.urandom) -> np.ndarray:
    """Indices of range(n), each kept independently with probability `rate`."""
    return np.flatnonzero(uniforms(n, randbytes) < rate)


class DpStepTrainer(StepTrainer):
    """Trains through the bundle's DP-SGD step graph of one optimizer (see the module doc).

    `randbytes` is the randomness source (os.urandom; tests may pass a fixed one). The plain
    `train` is refused: a DP trainer only trains by `train_dp`, which sets clip, noise and the
    expected batch before any step.
    """

    def __init__(self, bundle: Bundle, *, threads: int = 1, optimizer: str = "sgd",
                 randbytes: RandBytes = os.urandom) -> None:
        self._randbytes = randbytes
        self._noise = np.zeros(bundle.n_params, np.float32)
        self._scalars = {k: np.zeros((), np.float32)
                         for k in ("clip", "noise_multiplier", "expected_batch")}
        self._dp: DpSgd | None = None
        super().__init__(bundle, threads=threads, optimizer=optimizer)

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
                losses.append(self.step(x32[idx], y32[idx], lr))
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

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        if self._dp is None:
            raise LocalInputError("trainer: a DP-SGD step needs train_dp's parameters")
        self._noise[...] = standard_normals(self._noise.size, self._randbytes)
        return super()._step(x, y, lr)
