"""On-device training through a bundle's ONNX step graphs and stock onnxruntime (no torch).

One call of a step graph is one whole training step (forward, loss, backward, optimizer
update). `StepTrainer` keeps the parameters and optimizer state in two sets of preallocated
buffers bound to the session once (IO binding): a step reads one set and writes the other in
place, then the roles swap, so no weight is copied per step. A set's parameters are views of
one flat vector in the bundle's layout (`models/layout.py`), so a round's global weights go in
and its trained weights come out as one vector each, with no tensor-by-tensor copies, and
setting new weights writes into the bound buffers rather than binding new ones.
`genofed.agent.ort_training` holds the second backend behind the same interface (`Trainer`).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from genofed.agent.ortlib import ort
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle, GraphSpec, initial_state

log = logging.getLogger(__name__)

PREDICT_CHUNK = 8192
BACKENDS = ("step", "ort-training")


class Trainer(ABC):
    """What both backends offer: parameters in, local epochs, parameters and predictions out.

    Parameters go in and out either as one flat float32 vector in the bundle's layout
    (`set_weights`, `weights`: what a round uses) or by name (`set_params`, `params`).
    """

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
        self.layout = bundle.layout
        self._keep = self.layout.keep.astype(np.float32)  # flat: 1 = trained, 0 = pruned
        self._mask = self.layout.tensors(self._keep)  # the same by name (views): graph inputs

    @abstractmethod
    def weights(self) -> np.ndarray:
        """The current parameters as one float32 vector in the layout's order (a copy)."""

    @abstractmethod
    def set_weights(self, vec: np.ndarray) -> None:
        """Replace the parameters by a vector in the layout's order (pruned coordinates
        zeroed) and restart the optimizer."""

    @abstractmethod
    def _tensors(self) -> Mapping[str, np.ndarray]:
        """The current parameters by name, to be read at once (they may be live buffers)."""

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current parameters (float32 copies), by ONNX name."""
        return {k: np.array(v, np.float32) for k, v in self._tensors().items()}

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters by name (pruned coordinates zeroed) and restart the
        optimizer."""
        self.set_weights(self.layout.flatten(params))

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
              rng: np.random.Generator, interrupt: Callable[[], bool] | None = None
              ) -> list[float]:
        """Steps over shuffled minibatches (last partial batch kept); returns each step's loss.

        Give exactly one of epochs (full passes) or steps (minibatches, reshuffling each pass).
        `interrupt` is asked after every step; training ends there when it says True (a daemon
        told to stop leaves a round within one step, not at the end of its epochs).
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
            if interrupt is not None and interrupt():
                log.info("training interrupted after %d of %d steps", len(losses), total)
                break
        if losses:
            log.debug("trained %d steps on %d samples: loss %.4f -> %.4f", len(losses), n,
                      losses[0], losses[-1])
        return losses

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [B] of the current parameters, through the forward graph."""
        return self._predict(self._check_x(x), self._tensors())

    def mean_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean binary cross-entropy of the current parameters on (x, y)."""
        x32, y32 = self._check_xy(x, y)
        return bce_with_logits(self._predict(x32, self._tensors()), y32)

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

    def _masked(self, vec: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A flat parameter vector, size and finiteness checked, with its pruned coordinates
        zeroed: written into `out` (float32) only once it passed, else a new array."""
        v = np.asarray(vec)
        if v.shape != (self.layout.n_params,):
            raise LocalInputError(f"trainer: parameter vector has shape {list(v.shape)}, want "
                                  f"[{self.layout.n_params}]")
        finite = np.isfinite(v)
        if not finite.all():
            name = self.layout.name_at(int(np.argmin(finite)))
            raise LocalInputError(f"trainer: parameter {name} has non-finite values")
        if out is None:
            out = np.empty(self.layout.n_params, np.float32)
        return np.multiply(v, self._keep, out=out)

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
    parameters of the last `set_weights` or `set_params` (the round's global model); it needs
    a bundle exported with `proximal`.
    """

    def __init__(self, bundle: Bundle, *, threads: int = 1, optimizer: str = "sgd",
                 mu: float = 0.0) -> None:
        super().__init__(bundle, threads=threads)
        self._graph = self._step_graph(optimizer)
        if not (math.isfinite(mu) and mu >= 0):
            raise LocalInputError(f"trainer: mu must be >= 0, got {mu}")
        if mu > 0 and not bundle.proximal:
            raise LocalInputError(f"bundle {bundle.path}: exported without the proximal term; "
                                  "cannot train with mu > 0")
        self.optimizer = optimizer
        self.mu = mu
        self._sess = session(bundle, self._graph, threads)
        names = [p.name for p in self._specs]
        zero_state = initial_state(self._specs, optimizer)
        self._state_names = tuple(zero_state)
        self._carried = (*names, *self._state_names)  # params, then state
        self._fixed: dict[str, np.ndarray] = {f"mask_{n}": self._mask[n] for n in names}
        self._anchor: np.ndarray | None = None  # FedProx: the weights of the last set_weights
        if "mu" in self._graph.inputs:
            self._anchor = np.zeros(self.layout.n_params, np.float32)
            self._fixed |= {f"anchor_{k}": v for k, v in self.layout.tensors(self._anchor).items()}
            self._fixed["mu"] = np.array(mu, np.float32)
        self._fixed |= self._extra_inputs()
        self._lr = np.zeros((), np.float32)
        self._loss = np.zeros((), np.float32)
        # Two buffer sets, each the parameters (views of one flat vector) and the optimizer
        # state; bound once, then only ever written in place.
        self._flat = [np.zeros(self.layout.n_params, np.float32) for _ in (0, 1)]
        self._bufs = [self.layout.tensors(w) | {k: v.copy() for k, v in zero_state.items()}
                      for w in self._flat]
        self._bindings = [self._binding(i) for i in (0, 1)]
        self._cur = 0
        self.set_params(bundle.initial_params())

    def _step_graph(self, optimizer: str) -> GraphSpec:
        """The step graph this trainer runs (a subclass may pick another kind)."""
        if optimizer not in self.bundle.steps:
            raise LocalInputError(f"bundle {self.bundle.path}: no step graph for optimizer "
                                  f"{optimizer!r} (has {', '.join(self.bundle.steps)})")
        return self.bundle.steps[optimizer]

    def _extra_inputs(self) -> dict[str, np.ndarray]:
        """Further fixed graph inputs, bound once (buffers a subclass writes in place)."""
        return {}

    def _batch_inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Further graph inputs of one batch x, bound with it (none for the plain step)."""
        return {}

    def weights(self) -> np.ndarray:
        return self._flat[self._cur].copy()

    def _tensors(self) -> Mapping[str, np.ndarray]:
        return {p.name: self._bufs[self._cur][p.name] for p in self._specs}

    def set_weights(self, vec: np.ndarray) -> None:
        """Replace the parameters (pruned coordinates zeroed); the optimizer restarts at zero
        state, and they become the FedProx anchor."""
        self._masked(vec, out=self._flat[0])
        for k in self._state_names:
            self._bufs[0][k][...] = 0.0
        if self._anchor is not None:
            np.copyto(self._anchor, self._flat[0])
        self._cur = 0

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {k: self._bufs[self._cur][k].copy() for k in self._carried}
        out |= {k: v.copy() for k, v in self._fixed.items() if k.startswith("anchor_")}
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        anchors = {k: v for k, v in self._fixed.items() if k.startswith("anchor_")}
        want = set(self._carried) | set(anchors)
        if set(state) != want:
            raise LocalInputError(f"trainer: checkpoint holds {sorted(state)}, the {self.optimizer}"
                                  f" step needs {sorted(want)}")
        targets = {k: self._bufs[0][k] for k in self._state_names} | anchors
        for k, buf in targets.items():
            if np.shape(state[k]) != buf.shape:
                raise LocalInputError(f"trainer: checkpoint array {k} has shape "
                                      f"{list(np.shape(state[k]))}, want {list(buf.shape)}")
        self._masked(self.layout.flatten({p.name: state[p.name] for p in self._specs}),
                     out=self._flat[0])
        for k, buf in targets.items():
            buf[...] = state[k]
        self._cur = 0

    def _binding(self, i: int) -> ort.IOBinding:
        """Binding i reads buffer set i and writes set 1 - i. IO binding keeps the numpy
        buffers' memory: writing them in place is all it takes to feed new values."""
        b = self._sess.io_binding()
        for k in self._carried:
            b.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(self._bufs[i][k]))
            b.bind_ortvalue_output(f"new_{k}",
                                   ort.OrtValue.ortvalue_from_numpy(self._bufs[1 - i][k]))
        for k, v in self._fixed.items():
            b.bind_cpu_input(k, v)
        b.bind_cpu_input("lr", self._lr)
        b.bind_ortvalue_output("loss", ort.OrtValue.ortvalue_from_numpy(self._loss))
        return b

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        b = self._bindings[self._cur]
        self._lr[...] = lr
        b.bind_cpu_input("x", x)
        b.bind_cpu_input("y", y)
        for k, v in self._batch_inputs(x).items():
            b.bind_cpu_input(k, v)
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
