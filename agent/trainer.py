"""On-device training through a bundle's ONNX step graph and stock onnxruntime (no torch).

One call of the step graph is one whole SGD step: the trainer feeds the current parameters, a
minibatch and the learning rate, and keeps the new parameters the graph returns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping

import numpy as np
import onnxruntime as ort

from genofed.errors import GenofedError
from genofed.models.manifest import Bundle, GraphSpec

log = logging.getLogger(__name__)

PREDICT_CHUNK = 8192


class StepTrainer:
    """Trains a bundle's model with its SGD step graph; predicts with its forward graph."""

    def __init__(self, bundle: Bundle, *, threads: int = 1) -> None:
        if threads < 1:
            raise GenofedError(f"trainer: threads must be >= 1, got {threads}")
        self.bundle = bundle
        self.n_sites = bundle.n_sites
        self._specs = bundle.params
        self._step_sess = self._session(bundle.step, threads)
        self._fwd_sess = self._session(bundle.forward, threads)
        self.params: dict[str, np.ndarray] = {}
        self.set_params(bundle.initial_params())

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the current parameters (copied, float32, shapes checked)."""
        want = {p.name for p in self._specs}
        if set(params) != want:
            raise GenofedError(f"trainer: parameters {sorted(params)} do not match the model's "
                               f"{sorted(want)}")
        new: dict[str, np.ndarray] = {}
        for p in self._specs:
            a = np.asarray(params[p.name])
            if a.shape != p.shape:
                raise GenofedError(f"trainer: parameter {p.name} has shape {list(a.shape)}, "
                                   f"want {list(p.shape)}")
            a = np.array(a, dtype=np.float32, order="C")
            if not np.isfinite(a).all():
                raise GenofedError(f"trainer: parameter {p.name} has non-finite values")
            new[p.name] = a
        self.params = new

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One SGD step on the batch (x, y); updates params and returns the batch loss."""
        x32, y32 = self._check_xy(x, y)
        return self._step(x32, y32, _check_lr(lr))

    def train(self, x: np.ndarray, y: np.ndarray, *, epochs: int | None = None,
              steps: int | None = None, batch_size: int = 32, lr: float = 0.1,
              rng: np.random.Generator) -> list[float]:
        """SGD over shuffled minibatches (last partial batch kept); returns each step's loss.

        Give exactly one of epochs (full passes) or steps (minibatches, reshuffling each pass).
        """
        if (epochs is None) == (steps is None):
            raise GenofedError("trainer: give exactly one of epochs or steps")
        if batch_size < 1:
            raise GenofedError(f"trainer: batch_size must be >= 1, got {batch_size}")
        x32, y32 = self._check_xy(x, y)
        lr = _check_lr(lr)
        n = x32.shape[0]
        if epochs is not None:
            if epochs < 0:
                raise GenofedError(f"trainer: epochs must be >= 0, got {epochs}")
            total = epochs * math.ceil(n / batch_size)
        else:
            assert steps is not None
            if steps < 0:
                raise GenofedError(f"trainer: steps must be >= 0, got {steps}")
            total = steps
        losses: list[float] = []
        for _, idx in zip(range(total), _minibatches(n, batch_size, rng), strict=False):
            losses.append(self._step(x32[idx], y32[idx], lr))
        if losses:
            log.debug("trained %d steps on %d samples: loss %.4f -> %.4f", len(losses), n,
                      losses[0], losses[-1])
        return losses

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [B] of the current parameters, through the forward graph."""
        return self._predict(self._check_x(x))

    def mean_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean binary cross-entropy of the current parameters on (x, y)."""
        x32, y32 = self._check_xy(x, y)
        return bce_with_logits(self._predict(x32), y32)

    def _predict(self, x32: np.ndarray) -> np.ndarray:
        feed: dict[str, np.ndarray] = dict(self.params)
        out = []
        for start in range(0, x32.shape[0], PREDICT_CHUNK):
            feed["x"] = x32[start:start + PREDICT_CHUNK]
            out.append(self._fwd_sess.run(["logits"], feed)[0])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        feed: dict[str, np.ndarray] = dict(self.params)
        feed |= {"x": x, "y": y, "lr": np.array(lr, dtype=np.float32)}
        out = self._step_sess.run(list(self.bundle.step.outputs), feed)
        loss = float(out[-1])
        if not math.isfinite(loss):
            raise GenofedError(f"trainer: loss became {loss} (lr {lr} too high?); "
                               "parameters left unchanged")
        self.params = {p.name: a for p, a in zip(self._specs, out[:-1], strict=True)}
        return loss

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim != 2 or a.shape[1] != self.n_sites:
            raise GenofedError(f"trainer: x has shape {list(a.shape)}, want [n_samples, "
                               f"{self.n_sites}] (one column per panel site)")
        if a.dtype.kind != "f":
            raise GenofedError(f"trainer: x must be floating point (standardized dosages), "
                               f"got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise GenofedError("trainer: x has NaN or infinite values (impute missing dosages "
                               "before training)")
        return a

    def _check_xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x32 = self._check_x(x)
        b = np.asarray(y)
        if b.shape != (x32.shape[0],):
            raise GenofedError(f"trainer: y has shape {list(b.shape)}, want [{x32.shape[0]}] "
                               "(one label per row of x)")
        if b.dtype.kind not in "biuf":
            raise GenofedError(f"trainer: y must be numeric 0/1 labels, got {b.dtype}")
        y32 = np.ascontiguousarray(b, dtype=np.float32)
        if x32.shape[0] == 0:
            raise GenofedError("trainer: no samples")
        if not ((y32 >= 0) & (y32 <= 1)).all():
            raise GenofedError("trainer: y must lie in [0, 1]")
        return x32, y32

    def _session(self, graph: GraphSpec, threads: int) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = self.bundle.file(graph.file)
        try:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise GenofedError(f"bundle {self.bundle.path}: {graph.file}: onnxruntime cannot "
                               f"load it: {exc}") from None
        got_in = tuple(i.name for i in sess.get_inputs())
        got_out = tuple(o.name for o in sess.get_outputs())
        if (got_in, got_out) != (graph.inputs, graph.outputs):
            raise GenofedError(f"bundle {self.bundle.path}: {graph.file} has inputs "
                               f"{list(got_in)} -> {list(got_out)}, manifest says "
                               f"{list(graph.inputs)} -> {list(graph.outputs)}")
        shapes = {i.name: i.shape for i in sess.get_inputs()}
        for p in self._specs:
            if tuple(shapes[p.name]) != p.shape:
                raise GenofedError(f"bundle {self.bundle.path}: {graph.file}: input {p.name} "
                                   f"has shape {shapes[p.name]}, manifest says {list(p.shape)}")
        return sess


def bce_with_logits(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy from logits, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    return float(np.mean(np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z)))))


def _minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless shuffled passes over range(n), each cut into batches; the last may be short."""
    while True:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield perm[start:start + batch_size]


def _check_lr(lr: float) -> float:
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise GenofedError(f"trainer: learning rate must be a positive number, got {lr}")
    return lr
