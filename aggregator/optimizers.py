"""Server optimizers: how the aggregate update moves the global model (FedAvg, FedAdam).

Both take the example-weighted mean of the devices' deltas, `mean_delta`, as the aggregator
decodes it from the secure sum. FedAvg adds it scaled by `server_lr`. FedAdam (Reddi et al.
2021, "Adaptive Federated Optimization") treats its negation as a gradient:
m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2;  w += lr * m / (sqrt(v) + tau).
The state is plain arrays so the aggregator can store it with each model version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genofed.errors import LocalInputError


@dataclass(frozen=True)
class ServerOptimizer:
    """`name` is "fedavg" or "fedadam"; the other fields apply to FedAdam."""

    name: str = "fedavg"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in ("fedavg", "fedadam"):
            raise LocalInputError(f"server optimizer must be fedavg or fedadam, got {self.name!r}")
        if not self.lr > 0 or not self.tau > 0:
            raise LocalInputError("server lr and tau must be > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise LocalInputError("beta1 and beta2 must lie in [0, 1)")


@dataclass
class OptimizerState:
    """FedAdam's moments (empty for FedAvg)."""

    m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    v: np.ndarray = field(default_factory=lambda: np.zeros(0))


def apply(opt: ServerOptimizer, weights: np.ndarray, mean_delta: np.ndarray,
          state: OptimizerState) -> np.ndarray:
    """The next global weights (float32); updates `state` in place."""
    w = weights.astype(np.float64)
    d = np.asarray(mean_delta, dtype=np.float64)
    if d.shape != w.shape:
        raise LocalInputError(f"update of shape {d.shape} for a model of shape {w.shape}")
    if opt.name == "fedavg":
        return (w + opt.lr * d).astype(np.float32)
    if state.m.shape != w.shape:
        state.m, state.v = np.zeros_like(w), np.zeros_like(w)
    state.m = opt.beta1 * state.m + (1 - opt.beta1) * d
    state.v = opt.beta2 * state.v + (1 - opt.beta2) * d * d
    return (w + opt.lr * state.m / (np.sqrt(state.v) + opt.tau)).astype(np.float32)
