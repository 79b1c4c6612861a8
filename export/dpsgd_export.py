"""Export a DP-SGD step graph (genofed.export.dpsgd) and check it against torch: the same step
run eagerly, and plain per-example autograd in float64 (the SGD graph)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from genofed.errors import LocalInputError
from genofed.export.dpsgd import NORM_EPS, Tensor, make_dpsgd_step_fn
from genofed.export.stepgraph import (
    CHECK_BATCH_SIZES,
    CHECK_TOLERANCE,
    _batch_dim,
    _current,
    _example_batch,
    _export,
    _rel,
    _session,
    param_specs,
)
from genofed.models.manifest import (
    GraphSpec,
    ParamSpec,
    dpsgd_step_graph_names,
    feeds_input_norm,
    initial_state,
)
from genofed.models.zoo import Conv1D

log = logging.getLogger(__name__)


def export_dpsgd_step(module: nn.Module, n_sites: int, path: Path, optimizer: str = "sgd", *,
                      route: str | None = None) -> tuple[GraphSpec, float]:
    """Trace, export, check and write one optimizer's DP-SGD step graph.

    Returns its GraphSpec and the largest relative error the check saw.
    """
    specs = param_specs(module)
    names = replace(dpsgd_step_graph_names(specs, optimizer), file=path.name)
    b = _example_batch(specs, n_sites)
    example = dpsgd_inputs(module, specs, optimizer, b, n_sites, None)
    fed = feeds_input_norm(specs)
    n_fixed = len(example) - 6 - fed
    dynamic = (*([None] * n_fixed), {0: _batch_dim()}, {0: _batch_dim()}, *([None] * 4),
               *([{0: _batch_dim()}] if fed else []))
    _export(make_dpsgd_step_fn(module, specs, optimizer, route=route), example, dynamic, names,
            path)
    err = check_dpsgd_step(module, n_sites, path, optimizer, route=route)
    log.info("DP-SGD step graph %s: max relative error vs torch %.2e", path.name, err)
    return names, err


def check_dpsgd_step(module: nn.Module, n_sites: int, path: Path, optimizer: str = "sgd", *,
                     route: str | None = None, batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
                     seed: int = 0, tol: float = CHECK_TOLERANCE) -> float:
    """Run a DP-SGD step graph in onnxruntime against torch; raise if off by more than tol.

    Every output is compared with the same step run eagerly, on random parameters, state,
    masks and noise, with the clip at the median per-example norm (so some examples are
    clipped and some not). The SGD graph is also checked against `reference_dp_grads` (plain
    autograd, one example at a time), through the gradient implied by the update.
    """
    specs = param_specs(module)
    names = dpsgd_step_graph_names(specs, optimizer)
    fn = make_dpsgd_step_fn(module, specs, optimizer, route=route)
    sess = _session(path)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    n = len(specs)
    for b in batch_sizes:
        inputs = dpsgd_inputs(module, specs, optimizer, b, n_sites, gen)
        with torch.no_grad():
            want = [t.numpy() for t in fn(*inputs)]
        out = sess.run(None, {k: t.numpy() for k, t in zip(names.inputs, inputs, strict=True)})
        errs = [_rel(g, w) for g, w in zip(out, want, strict=True)]
        if optimizer == "sgd":
            params, masks = inputs[:n], inputs[n:2 * n]
            noise = inputs[2 * n:3 * n]
            x, y, lr, clip, sigma, expected = inputs[3 * n:3 * n + 6]
            ref = reference_dp_grads(module, specs, params, masks, noise, x, y, float(clip),
                                     float(sigma), float(expected))
            for p, new, g in zip(params, out[:n], ref, strict=True):
                implied = (p.numpy().astype(np.float64) - new.astype(np.float64)) / float(lr)
                errs.append(_rel(implied, g))
        err = max(errs)
        worst = max(worst, err)
        if not err <= tol:
            raise LocalInputError(f"{path.name}: onnxruntime DP-SGD step differs from torch at "
                                  f"batch {b}: relative error {err:.3g} > {tol:g}")
    return worst


def reference_dp_grads(module: nn.Module, specs: Sequence[ParamSpec],
                       params: Sequence[Tensor], masks: Sequence[Tensor],
                       noise: Sequence[Tensor], x: Tensor, y: Tensor, clip: float,
                       sigma: float, expected: float) -> list[np.ndarray]:
    """The DP-SGD gradient by plain autograd, one example at a time, in float64."""
    leaves = [p.detach().double().clone().requires_grad_(True) for p in params]
    named = {s.torch_name: q for s, q in zip(specs, leaves, strict=True)}
    m64 = [m.double() for m in masks]
    total = [torch.zeros_like(q) for q in leaves]
    for i in range(x.shape[0]):
        out = functional_call(module, named, (x[i:i + 1].double(),))
        loss = F.binary_cross_entropy_with_logits(out, y[i:i + 1].double(), reduction="sum")
        g = [gi * m for gi, m in zip(torch.autograd.grad(loss, leaves), m64, strict=True)]
        norm = math.sqrt(sum(float((gi * gi).sum()) for gi in g))
        c = min(1.0, clip / (norm + NORM_EPS))
        total = [t + c * gi for t, gi in zip(total, g, strict=True)]
    return [((t + sigma * clip * z.double()) * m / expected).detach().numpy()
            for t, z, m in zip(total, noise, m64, strict=True)]


def dpsgd_inputs(module: nn.Module, specs: Sequence[ParamSpec], optimizer: str, b: int,
                 n_sites: int, gen: torch.Generator | None) -> list[Tensor]:
    """DP step inputs in order: zeros/ones for tracing (gen None), random for checks."""
    params = _current(module)
    state = [torch.from_numpy(a) for a in initial_state(specs, optimizer).values()]
    masks = [torch.ones_like(p) for p in params]
    noise = [torch.zeros_like(p) for p in params]
    x, y = torch.zeros(b, n_sites), torch.zeros(b)
    clip, sigma = torch.tensor(1.0), torch.tensor(1.0)
    if gen is not None:
        params = [p + 0.1 * torch.randn(p.shape, generator=gen) for p in params]
        masks = [(torch.rand(p.shape, generator=gen) < 0.8).float() for p in params]
        params = [p * m for p, m in zip(params, masks, strict=True)]
        pruned = [*masks, *masks, torch.ones(())][:len(state)]
        state = [torch.rand(s.shape, generator=gen) * 0.01 * m
                 for s, m in zip(state, pruned, strict=True)]
        if optimizer == "adam":
            state[-1] = torch.tensor(3.0)
        noise = [torch.randn(p.shape, generator=gen) for p in params]
        x = torch.randn(b, n_sites, generator=gen)
        y = torch.bernoulli(torch.full((b,), 0.5), generator=gen)
        norms = _example_norms(module, specs, params, masks, x, y)
        clip = torch.tensor(float(np.median(norms)))
        sigma = torch.tensor(0.7)
    fed = [input_sqnorm(x, masks[0])] if feeds_input_norm(specs) else []
    return [*params, *state, *masks, *noise, x, y, torch.tensor(0.5), clip, sigma,
            torch.tensor(float(b) + 0.5), *fed]


def input_sqnorm(x: Tensor, weight_mask: Tensor) -> Tensor:
    """A logistic regression's fed input norms: sum_j M_j x_ij^2 per example (M [1, K])."""
    return (x * x) @ weight_mask[0]


def _example_norms(module: nn.Module, specs: Sequence[ParamSpec], params: Sequence[Tensor],
                   masks: Sequence[Tensor], x: Tensor, y: Tensor) -> np.ndarray:
    """Each example's masked gradient norm (plain autograd)."""
    out = []
    for i in range(x.shape[0]):
        g = reference_dp_grads(module, specs, params, masks, [torch.zeros_like(p) for p in
                                                              params],
                               x[i:i + 1], y[i:i + 1], clip=1e30, sigma=0.0, expected=1.0)
        out.append(float(np.sqrt(sum(float((gi * gi).sum()) for gi in g))))
    return np.array(out)


def opacus_twin(module: nn.Module) -> nn.Module:
    """The module as Opacus can clip it per example: the zoo's Conv1D (an unfold) becomes the
    same layer through nn.Conv1d, which Opacus has a per-example rule for, with the same
    parameter names and order; other zoo models are returned as they are. For the tests and
    the benchmark that take Opacus as the oracle."""
    if not isinstance(module, Conv1D):
        return module
    return _ConvTwin(module)


class _ConvTwin(nn.Module):
    def __init__(self, ref: Conv1D) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, ref.conv.out_channels, ref.conv.kernel_size[0],
                              stride=ref.conv.stride[0])
        self.fc = nn.Linear(ref.fc.in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.unsqueeze(1))).flatten(1)).squeeze(-1)
