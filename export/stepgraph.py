"""Export one whole SGD training step, and the forward pass, as ONNX graphs for stock onnxruntime.

The step `(params..., x, y, lr) -> (new_params..., loss)` (BCE with logits, mean over the
batch; p - lr * grad) is written with torch.func, traced to core ATen by `make_fx` with
`core_aten_decompositions()` in symbolic mode (so the batch size stays a symbol and the mean
divides by the runtime batch size, not by the example's), then converted with the dynamo
`torch.onnx.export`. Every exported graph is run in onnxruntime against PyTorch eager before it
is accepted.

Found with torch 2.13 / onnxscript 0.7.2: the core table decomposes `aten.empty_like` into
`aten.empty_permuted`, which the ONNX registry cannot translate (the BCE decomposition's
`1 - y` reaches it), so `empty_like` is left undecomposed; the exporter translates it directly.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch._decomp import core_aten_decompositions
from torch.export import Dim
from torch.func import functional_call, grad_and_value
from torch.fx.experimental.proxy_tensor import make_fx

from genofed.errors import GenofedError
from genofed.models.manifest import (
    GraphSpec,
    ParamSpec,
    forward_graph_names,
    onnx_name,
    step_graph_names,
)

log = logging.getLogger(__name__)
# The exporter's op registry warns on every export that torchvision's optional ops are absent;
# our graphs use none of them.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

# Opset 18 with IR 8 (the lowest IR that carries opset 18): onnxruntime >= 1.14 loads the
# graphs, which covers the agent's floor (1.17: IR <= 9) and 1.19 (the last training release).
# The exporter writes IR 10; the graphs use nothing newer than IR 8 once trace metadata is gone.
OPSET = 18
IR_VERSION = 8
CHECK_BATCH_SIZES = (1, 7, 32)
CHECK_TOLERANCE = 1e-4

StepFn = Callable[..., tuple[torch.Tensor, ...]]


def param_specs(module: nn.Module) -> tuple[ParamSpec, ...]:
    """The module's trainable tensors in graph order, with ONNX-safe names."""
    specs = tuple(ParamSpec(name=onnx_name(n), torch_name=n, shape=tuple(p.shape))
                  for n, p in module.named_parameters())
    if len({s.name for s in specs}) != len(specs):
        raise GenofedError("two parameters map to the same ONNX name")
    return specs


def make_step_fn(module: nn.Module, specs: Sequence[ParamSpec]) -> StepFn:
    """The functional SGD step `(params..., x, y, lr) -> (new_params..., loss)`."""
    names = [s.torch_name for s in specs]

    def step(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = dict(zip(names, args[:len(names)], strict=True))
        x, y, lr = args[len(names):]

        def loss_fn(ps: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(functional_call(module, ps, (x,)), y)

        grads, loss = grad_and_value(loss_fn)(params)
        return (*(params[n] - lr * grads[n] for n in names), loss)

    return step


def make_forward_fn(module: nn.Module, specs: Sequence[ParamSpec]) -> StepFn:
    """The functional forward pass `(x, params...) -> (logits,)`."""
    names = [s.torch_name for s in specs]

    def forward(x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (functional_call(module, dict(zip(names, params, strict=True)), (x,)),)

    return forward


def trace(fn: StepFn, example: Sequence[torch.Tensor]) -> fx.GraphModule:
    """Trace fn to core ATen with symbolic shapes."""
    table = core_aten_decompositions()
    table.pop(torch.ops.aten.empty_like.default, None)  # -> empty_permuted: no ONNX lowering
    gm = make_fx(fn, decomposition_table=dict(table), tracing_mode="symbolic")(*example)
    gm.eval()
    return gm


def export_step(module: nn.Module, n_sites: int, path: Path) -> GraphSpec:
    """Trace, export, check and write the SGD step graph; returns its names."""
    specs = param_specs(module)
    names = step_graph_names(specs)
    b = _example_batch(specs, n_sites)
    example = [*_current(module), torch.zeros(b, n_sites), torch.zeros(b),
               torch.tensor(0.1)]
    n = len(specs)
    dynamic = (*([None] * n), {0: _batch_dim()}, {0: _batch_dim()}, None)
    _export(make_step_fn(module, specs), example, dynamic, names, path)
    err = check_step(module, n_sites, path)
    log.info("step graph %s: max relative error vs torch eager %.2e", path.name, err)
    return names


def export_forward(module: nn.Module, n_sites: int, path: Path) -> GraphSpec:
    """Trace, export, check and write the forward graph; returns its names."""
    specs = param_specs(module)
    names = forward_graph_names(specs)
    b = _example_batch(specs, n_sites)
    example = [torch.zeros(b, n_sites), *_current(module)]
    dynamic = ({0: _batch_dim()}, *([None] * len(specs)))
    _export(make_forward_fn(module, specs), example, dynamic, names, path)
    err = check_forward(module, n_sites, path)
    log.info("forward graph %s: max relative error vs torch eager %.2e", path.name, err)
    return names


def check_step(module: nn.Module, n_sites: int, path: Path, *,
               batch_sizes: Sequence[int] = CHECK_BATCH_SIZES, seed: int = 0,
               tol: float = CHECK_TOLERANCE) -> float:
    """Run the step graph in onnxruntime against torch autograd; raise if off by more than tol.

    Compares the loss and the gradient implied by the update, (p - new_p) / lr, each relative
    to its own largest entry. Returns the largest relative error seen.
    """
    specs = param_specs(module)
    sess = _session(path)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        params = [p + 0.1 * torch.randn(p.shape, generator=gen) for p in _current(module)]
        x = torch.randn(b, n_sites, generator=gen)
        y = torch.bernoulli(torch.full((b,), 0.5), generator=gen)
        lr = 0.5
        ref_loss, ref_grads = _eager_grads(module, specs, params, x, y)
        feed = {s.name: p.numpy() for s, p in zip(specs, params, strict=True)}
        feed |= {"x": x.numpy(), "y": y.numpy(), "lr": np.array(lr, np.float32)}
        out = sess.run(None, feed)
        errs = [_rel(out[-1], ref_loss)]
        for p, new, g in zip(params, out[:-1], ref_grads, strict=True):
            implied = (p.numpy().astype(np.float64) - new.astype(np.float64)) / lr
            errs.append(_rel(implied, g))
        err = max(errs)
        worst = max(worst, err)
        if not err <= tol:
            raise GenofedError(f"{path.name}: onnxruntime step differs from torch eager at "
                               f"batch {b}: relative error {err:.3g} > {tol:g}")
    return worst


def check_forward(module: nn.Module, n_sites: int, path: Path, *,
                  batch_sizes: Sequence[int] = CHECK_BATCH_SIZES, seed: int = 0,
                  tol: float = CHECK_TOLERANCE) -> float:
    """Run the forward graph in onnxruntime against the torch module; raise if off by > tol."""
    specs = param_specs(module)
    sess = _session(path)
    gen = torch.Generator().manual_seed(seed)
    params = [p + 0.1 * torch.randn(p.shape, generator=gen) for p in _current(module)]
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, n_sites, generator=gen)
        with torch.no_grad():
            named = {s.torch_name: p for s, p in zip(specs, params, strict=True)}
            ref = functional_call(module, named, (x,)).numpy()
        feed = {"x": x.numpy()} | {s.name: p.numpy() for s, p in zip(specs, params, strict=True)}
        (got,) = sess.run(None, feed)
        err = _rel(got, ref)
        worst = max(worst, err)
        if got.shape != (b,) or not err <= tol:
            raise GenofedError(f"{path.name}: onnxruntime logits differ from torch at batch "
                               f"{b}: shape {got.shape}, relative error {err:.3g} > {tol:g}")
    return worst


def _export(fn: StepFn, example: Sequence[torch.Tensor], dynamic: tuple[object, ...],
            names: GraphSpec, path: Path) -> None:
    t0 = time.perf_counter()
    gm = trace(fn, example)
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        program = torch.onnx.export(gm, tuple(example), dynamic_shapes=dynamic,
                                    input_names=list(names.inputs),
                                    output_names=list(names.outputs), opset_version=OPSET,
                                    dynamo=True, external_data=False, optimize=True,
                                    verbose=False)
    if program is None:
        raise GenofedError(f"{path.name}: torch.onnx.export returned no program")
    model = _finish(program.model_proto, names, path)
    onnx.save_model(model, str(path))
    log.info("exported %s: trace %.1fs, export %.1fs, %d nodes", path.name, t1 - t0,
             time.perf_counter() - t1, len(model.graph.node))


def _finish(model: onnx.ModelProto, names: GraphSpec, path: Path) -> onnx.ModelProto:
    """Pin IR version and opsets, strip trace metadata, and check names and the batch dim."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > 21:
            raise GenofedError(f"{path.name}: exported with opset {imp.version} > 21")
        if imp.domain not in ("", "ai.onnx"):
            raise GenofedError(f"{path.name}: uses non-standard opset domain {imp.domain!r}")
    model.ir_version = min(model.ir_version, IR_VERSION)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    del model.graph.metadata_props[:]
    model.graph.doc_string = ""
    got_in = tuple(i.name for i in model.graph.input)
    got_out = tuple(o.name for o in model.graph.output)
    if (got_in, got_out) != (names.inputs, names.outputs):
        raise GenofedError(f"{path.name}: graph names {got_in} -> {got_out} are not "
                           f"{names.inputs} -> {names.outputs}")
    x = next(i for i in model.graph.input if i.name == "x")
    if not x.type.tensor_type.shape.dim[0].dim_param:
        raise GenofedError(f"{path.name}: the batch dimension of x was not kept dynamic")
    onnx.checker.check_model(model, full_check=True)
    return model


def _eager_grads(module: nn.Module, specs: Sequence[ParamSpec], params: list[torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
    """Loss and gradients by plain autograd on the module itself (no torch.func)."""
    leaves = {s.torch_name: p.clone().requires_grad_(True)
              for s, p in zip(specs, params, strict=True)}
    loss = F.binary_cross_entropy_with_logits(functional_call(module, leaves, (x,)), y)
    grads = torch.autograd.grad(loss, [leaves[s.torch_name] for s in specs])
    return loss.detach().numpy(), [g.numpy() for g in grads]


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    got64, ref64 = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got64.shape != ref64.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(ref64), initial=0.0)), 1e-12)
    return float(np.max(np.abs(got64 - ref64), initial=0.0)) / scale


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _current(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone().float() for p in module.parameters()]


def _example_batch(specs: Sequence[ParamSpec], n_sites: int) -> int:
    """A tracing batch size equal to no other dimension, so no size gets unified with it."""
    taken = {n_sites} | {d for s in specs for d in s.shape}
    b = 3
    while b in taken:
        b += 1
    return b


def _batch_dim() -> Dim:
    return Dim("batch", min=1, max=1 << 24)
