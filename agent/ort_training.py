"""The second training backend: ONNX Runtime's on-device training API (onnxruntime-training).

`import onnxruntime.training` runs that package's __init__, which imports torch (through its
ORTModule, optimizer and AMP helpers). The API the device needs, `onnxruntime.training.api`
(Module, Optimizer, CheckpointState), needs only onnxruntime's C bindings and numpy, so
`training_api()` registers a bare package object for `onnxruntime.training` whose __path__ is
the real folder, and imports `.api` beneath it: the same files, without the __init__.

The package is the x86_64-only onnxruntime-training-cpu (last release 1.19.2); with stock
onnxruntime `training_api()` raises a one-line LocalInputError. ORT's API offers SGD and AdamW
(exported with weight decay 0, i.e. Adam); for SGD with momentum this backend takes ORT's
gradients (`Parameter.grad`) and applies the momentum update in numpy.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from genofed.agent.ortlib import ort
from genofed.agent.trainer import BACKENDS, StepTrainer, Trainer
from genofed.errors import LocalInputError
from genofed.models.manifest import Bundle


def training_api() -> Any:
    """The module onnxruntime.training.api, imported without torch."""
    name = "onnxruntime.training"
    folder = Path(ort.__file__).parent / "training"
    if not (folder / "api" / "module.py").is_file():
        raise LocalInputError(f"the ORT training API is not installed (onnxruntime "
                              f"{ort.__version__} is the stock build; it needs "
                              "onnxruntime-training-cpu, x86_64 only)")
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(folder)]
        pkg.__package__ = name
        sys.modules[name] = pkg
    return importlib.import_module(f"{name}.api")


class OrtTrainingTrainer(Trainer):
    """Trains with the bundle's onnxruntime-training artifacts (Module, Optimizer)."""

    def __init__(self, bundle: Bundle, *, threads: int = 1, optimizer: str = "adam") -> None:
        super().__init__(bundle, threads=threads)
        art = bundle.ort
        if art is None:
            raise LocalInputError(f"bundle {bundle.path}: exported without onnxruntime-training "
                                  "artifacts")
        if optimizer not in (*art.optimizers, "sgd_momentum") or (
                optimizer == "sgd_momentum" and "sgd_momentum" not in bundle.steps):
            raise LocalInputError(f"bundle {bundle.path}: the ORT training backend has no "
                                  f"optimizer {optimizer!r}")
        self.optimizer = optimizer
        self._api = training_api()
        self._momentum = bundle.steps["sgd_momentum"].hyper["momentum"] \
            if optimizer == "sgd_momentum" else 0.0
        self._bufs: dict[str, np.ndarray] = {}
        self._opts = ort.SessionOptions()
        self._opts.intra_op_num_threads = threads
        self._opts.inter_op_num_threads = 1
        self._state: Any = None
        self._module: Any = None
        self._opt: Any = None
        self.set_params(bundle.initial_params())

    def _load(self) -> None:
        """A fresh checkpoint state and Module. ORT keeps an Optimizer's moments and step count
        in the checkpoint state, and a new Optimizer on that state carries them on: restarting
        the optimizer at zero state means starting from the checkpoint file again."""
        art = self.bundle.ort
        assert art is not None
        self._opt = None
        self._state = self._api.CheckpointState.load_checkpoint(
            str(self.bundle.file(art.checkpoint)))
        self._module = self._api.Module(str(self.bundle.file(art.training_model)), self._state,
                                        str(self.bundle.file(art.eval_model)), device="cpu",
                                        session_options=self._opts)
        for p in self._specs:
            self._state.parameters[f"mask_{p.name}"] = self._mask[p.name]

    def weights(self) -> np.ndarray:
        return self.layout.flatten(self._tensors())

    def _tensors(self) -> Mapping[str, np.ndarray]:
        return {p.name: self._state.parameters[p.name].data for p in self._specs}

    def set_weights(self, vec: np.ndarray) -> None:
        """Replace the parameters (pruned coordinates zeroed); the optimizer restarts."""
        new = self._masked(vec)
        self._load()
        for name, a in self.layout.tensors(new).items():
            self._state.parameters[name] = a  # copied into the checkpoint state
        art = self.bundle.ort
        assert art is not None
        if self.optimizer == "sgd_momentum":
            self._bufs = {p.name: np.zeros(p.shape, np.float32) for p in self._specs}
        else:
            self._opt = self._api.Optimizer(str(self.bundle.file(art.optimizers[self.optimizer])),
                                            self._module)
        self._module.lazy_reset_grad()

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self._module.train()
        loss = float(self._module(x, y))
        if not math.isfinite(loss):
            self._module.lazy_reset_grad()
            return loss
        if self.optimizer == "sgd_momentum":
            for p in self._specs:
                param = self._state.parameters[p.name]
                buf = self._bufs[p.name]
                buf *= self._momentum
                buf += param.grad
                param.data = (param.data - lr * buf) * self._mask[p.name]
        else:
            self._opt.set_learning_rate(lr)
            self._opt.step()
        self._module.lazy_reset_grad()
        return loss


def make_trainer(bundle: Bundle, *, backend: str = "step", optimizer: str = "sgd",
                 threads: int = 1, mu: float = 0.0) -> Trainer:
    """A trainer of either backend for the bundle."""
    if backend == "step":
        return StepTrainer(bundle, threads=threads, optimizer=optimizer, mu=mu)
    if backend == "ort-training":
        if mu:
            raise LocalInputError("trainer: the ORT training backend has no FedProx term")
        return OrtTrainingTrainer(bundle, threads=threads, optimizer=optimizer)
    raise LocalInputError(f"trainer: unknown backend {backend!r} (want one of "
                          f"{', '.join(BACKENDS)})")
