"""On-device training through a bundle's ONNX step graphs and stock onnxruntime (no torch).

One call of a step graph is one whole training step (forward, loss, backward, optimizer
update). `StepTrainer` keeps the parameters and optimizer state in two sets of preallocated
buffers bound to the session once (IO binding): a step reads one set and writes the other in
place, then the roles swap, so no weight is copied per step. `genofed.agent.ort_training`
holds the second backend behind the same interface (`Trainer`).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping

import numpy as np

from genofed.agent.ortlib import ort
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, GraphSpec, initial_state, state_names

log = logging.getLogger(__name__)

PREDICT_CHUNK = 8192
BACKENDS = ("step", "ort-training")


class Trainer(ABC):
    """What both backends offer: parameters in, local epochs, parameters and predictions out."""

    bundle: Bundle
    optimizer: str

    def __init__(self, bundle: Bundle, *, threads: int) -> None:
        if threads < 1:
            raise LocalInputError(f"trainer: threads must be >= 1, got {threads}")
        self.bundle = bundle
        self.n_sites = bundle.n_sites
        self._specs = bundle.params
        self._threads = threads
        self._fwd_sess = session(bundle, bundle.forward, threads)
        self._mask = bundle.mask()

    @property
    @abstractmethod
    def params(self) -> dict[str, np.ndarray]:
        """The current parameters (float32 copies), by ONNX name."""

    @abstractmethod
    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters (pruned coordinates zeroed) and restart the optimizer."""

    @abstractmethod
    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One step on a checked batch; returns its loss."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and optimizer state, for a checkpoint."""
        raise LocalInputError(f"trainer: {type(self).__name__} does not checkpoint")

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what `state_dict` returned."""
        raise LocalInputError(f"trainer: {type(self).__name__} does not checkpoint")

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One step on the batch (x, y); updates params and returns the batch loss."""
        x32, y32 = self._check_xy(x, y)
        return self._checked_step(x32, y32, _check_lr(lr))

    def train(self, x: np.ndarray, y: np.ndarray, *, epochs: int | None = None,
              steps: int | None = None, batch_size: int = 32, lr: float = 0.1,
              rng: np.random.Generator) -> list[float]:
        """Steps over shuffled minibatches (last partial batch kept); returns each step's loss.

        Give exactly one of epochs (full passes) or steps (minibatches, reshuffling each pass).
        """
        if (epochs is None) == (steps is None):
            raise LocalInputError("trainer: give exactly one of epochs or steps")
        if batch_size < 1:
            raise LocalInputError(f"trainer: batch_size must be >= 1, got {batch_size}")
        x32, y32 = self._check_xy(x, y)
        lr = _check_lr(lr)
        n = x32.shape[0]
        if epochs is not None:
            if epochs < 0:
                raise LocalInputError(f"trainer: epochs must be >= 0, got {epochs}")
            total = epochs * math.ceil(n / batch_size)
        else:
            assert steps is not None
            if steps < 0:
                raise LocalInputError(f"trainer: steps must be >= 0, got {steps}")
            total = steps
        losses: list[float] = []
        # One batch buffer, refilled in place: a fresh [batch, sites] array per step costs a
        # page-faulting allocation as large as the batch (12.8 MB at 100,000 sites).
        xb = np.empty((min(batch_size, n), x32.shape[1]), np.float32)
        yb = np.empty(min(batch_size, n), np.float32)
        for _, idx in zip(range(total), _minibatches(n, batch_size, rng), strict=False):
            m = len(idx)
            np.take(x32, idx, axis=0, out=xb[:m], mode="clip")  # "raise" would buffer
            np.take(y32, idx, out=yb[:m], mode="clip")
            losses.append(self._checked_step(xb[:m], yb[:m], lr))
        if losses:
            log.debug("trained %d steps on %d samples: loss %.4f -> %.4f", len(losses), n,
                      losses[0], losses[-1])
        return losses

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [B] of the current parameters, through the forward graph."""
        return self._predict(self._check_x(x), self.params)

    def mean_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean binary cross-entropy of the current parameters on (x, y)."""
        x32, y32 = self._check_xy(x, y)
        return bce_with_logits(self._predict(x32, self.params), y32)

    def _checked_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss = self._step(x, y, lr)
        if not math.isfinite(loss):
            raise LocalInputError(f"trainer: loss became {loss} (lr {lr} too high?)")
        return loss

    def _predict(self, x32: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        feed: dict[str, np.ndarray] = dict(params)
        out = []
        for start in range(0, x32.shape[0], PREDICT_CHUNK):
            feed["x"] = x32[start:start + PREDICT_CHUNK]
            out.append(self._fwd_sess.run(["logits"], feed)[0])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _checked_params(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Float32 C-order copies, shapes and finiteness checked, pruned entries zeroed."""
        want = {p.name for p in self._specs}
        if set(params) != want:
            raise LocalInputError(f"trainer: parameters {sorted(params)} do not match the model's "
                                  f"{sorted(want)}")
        new: dict[str, np.ndarray] = {}
        for p in self._specs:
            a = np.asarray(params[p.name])
            if a.shape != p.shape:
                raise LocalInputError(f"trainer: parameter {p.name} has shape {list(a.shape)}, "
                                      f"want {list(p.shape)}")
            a = np.array(a, dtype=np.float32, order="C")
            if not np.isfinite(a).all():
                raise LocalInputError(f"trainer: parameter {p.name} has non-finite values")
            new[p.name] = a * self._mask[p.name]
        return new

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x)
        if a.ndim != 2 or a.shape[1] != self.n_sites:
            raise LocalInputError(f"trainer: x has shape {list(a.shape)}, want [n_samples, "
                                  f"{self.n_sites}] (one column per panel site)")
        if a.dtype.kind != "f":
            raise LocalInputError(f"trainer: x must be floating point (standardized dosages), "
                                  f"got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise LocalInputError("trainer: x has NaN or infinite values (impute missing dosages "
                                  "before training)")
        return a

    def _check_xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x32 = self._check_x(x)
        b = np.asarray(y)
        if b.shape != (x32.shape[0],):
            raise LocalInputError(f"trainer: y has shape {list(b.shape)}, want [{x32.shape[0]}] "
                                  "(one label per row of x)")
        if b.dtype.kind not in "biuf":
            raise LocalInputError(f"trainer: y must be numeric 0/1 labels, got {b.dtype}")
        y32 = np.ascontiguousarray(b, dtype=np.float32)
        if x32.shape[0] == 0:
            raise LocalInputError("trainer: no samples")
        if not ((y32 >= 0) & (y32 <= 1)).all():
            raise LocalInputError("trainer: y must lie in [0, 1]")
        return x32, y32


class StepTrainer(Trainer):
    """Trains with one of the bundle's step graphs on stock onnxruntime; predicts with forward.

    `mu` > 0 adds the FedProx term (mu / 2) * ||w - w_anchor||^2, the anchor being the
    parameters of the last `set_params` (the round's global model); it needs a bundle exported
    with `proximal`.
    """

    def __init__(self, bundle: Bundle, *, threads: int = 1, optimizer: str = "sgd",
                 mu: float = 0.0) -> None:
        super().__init__(bundle, threads=threads)
        if optimizer not in bundle.steps:
            raise LocalInputError(f"bundle {bundle.path}: no step graph for optimizer "
                                  f"{optimizer!r} (has {', '.join(bundle.steps)})")
        if not (math.isfinite(mu) and mu >= 0):
            raise LocalInputError(f"trainer: mu must be >= 0, got {mu}")
        if mu > 0 and not bundle.proximal:
            raise LocalInputError(f"bundle {bundle.path}: exported without the proximal term; "
                                  "cannot train with mu > 0")
        self.optimizer = optimizer
        self.mu = mu
        self._graph = bundle.steps[optimizer]
        self._sess = session(bundle, self._graph, threads)
        names = [p.name for p in self._specs]
        self._carried = (*names, *state_names(self._specs, optimizer))  # params, then state
        self._fixed: dict[str, np.ndarray] = {f"mask_{n}": self._mask[n] for n in names}
        self._lr = np.zeros((), np.float32)
        self._loss = np.zeros((), np.float32)
        self._bufs: list[dict[str, np.ndarray]] = []
        self._bindings: list[ort.IOBinding] = []
        self._cur = 0
        self.set_params(bundle.initial_params())

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {p.name: self._bufs[self._cur][p.name].copy() for p in self._specs}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters (pruned coordinates zeroed); the optimizer restarts at zero
        state, and they become the FedProx anchor."""
        new = self._checked_params(params)
        state = dict(new) | initial_state(self._specs, self.optimizer)
        if self.bundle.proximal:
            self._fixed |= {f"anchor_{k}": v.copy() for k, v in new.items()}
            self._fixed["mu"] = np.array(self.mu, np.float32)
        self._bind(state)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {k: self._bufs[self._cur][k].copy() for k in self._carried}
        if self.bundle.proximal:
            out |= {k: v.copy() for k, v in self._fixed.items() if k.startswith("anchor_")}
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        want = set(self._carried) | ({f"anchor_{p.name}" for p in self._specs}
                                     if self.bundle.proximal else set())
        if set(state) != want:
            raise LocalInputError(f"trainer: checkpoint holds {sorted(state)}, the {self.optimizer}"
                                  f" step needs {sorted(want)}")
        arrays = {k: np.array(state[k], dtype=np.float32, order="C") for k in want}
        arrays |= self._checked_params({p.name: state[p.name] for p in self._specs})
        if self.bundle.proximal:
            self._fixed |= {k: v for k, v in arrays.items() if k.startswith("anchor_")}
        self._bind({k: arrays[k] for k in self._carried})

    def _bind(self, state: Mapping[str, np.ndarray]) -> None:
        """Two buffer sets and two bindings: binding i reads set i and writes set 1 - i."""
        self._bufs = [{k: np.array(state[k], dtype=np.float32, order="C") for k in self._carried},
                      {k: np.empty_like(state[k], dtype=np.float32) for k in self._carried}]
        self._bindings = []
        for i in (0, 1):
            b = self._sess.io_binding()
            for k in self._carried:
                b.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(self._bufs[i][k]))
                b.bind_ortvalue_output(f"new_{k}",
                                       ort.OrtValue.ortvalue_from_numpy(self._bufs[1 - i][k]))
            for k, v in self._fixed.items():
                b.bind_cpu_input(k, v)
            b.bind_cpu_input("lr", self._lr)
            b.bind_ortvalue_output("loss", ort.OrtValue.ortvalue_from_numpy(self._loss))
            self._bindings.append(b)
        self._cur = 0

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        b = self._bindings[self._cur]
        self._lr[...] = lr
        b.bind_cpu_input("x", x)
        b.bind_cpu_input("y", y)
        self._sess.run_with_iobinding(b)
        loss = float(self._loss)
        if math.isfinite(loss):
            self._cur = 1 - self._cur
        return loss


def session(bundle: Bundle, graph: GraphSpec, threads: int) -> ort.InferenceSession:
    """An onnxruntime session for one graph of the bundle, its names and shapes checked."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    path = bundle.file(graph.file)
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise LocalInputError(f"bundle {bundle.path}: {graph.file}: onnxruntime cannot "
                              f"load it: {exc}") from None
    got_in = tuple(i.name for i in sess.get_inputs())
    got_out = tuple(o.name for o in sess.get_outputs())
    if (got_in, got_out) != (graph.inputs, graph.outputs):
        raise LocalInputError(f"bundle {bundle.path}: {graph.file} has inputs "
                              f"{list(got_in)} -> {list(got_out)}, manifest says "
                              f"{list(graph.inputs)} -> {list(graph.outputs)}")
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    for p in bundle.params:
        if p.name in shapes and tuple(shapes[p.name]) != p.shape:
            raise LocalInputError(f"bundle {bundle.path}: {graph.file}: input {p.name} "
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
        raise LocalInputError(f"trainer: learning rate must be a positive number, got {lr}")
    return lr
