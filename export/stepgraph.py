"""Export whole training steps, and forward and eval passes, as ONNX graphs for onnxruntime.

A step (SGD, SGD with momentum or Adam; optimizer state, pruning masks and an optional FedProx
anchor are graph inputs and outputs, see genofed.models.manifest) is written with torch.func,
traced to core ATen by `make_fx` with
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
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

from genofed.errors import LocalInputError
from genofed.models.manifest import (
    DEFAULT_HYPER,
    GraphSpec,
    ParamSpec,
    eval_graph_names,
    forward_graph_names,
    initial_state,
    onnx_name,
    state_names,
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
# The exporter's graph optimizer (onnxscript) turned Adam's eps, a 1e-8 constant, into 0.0
# (torch 2.13, onnxscript 0.7.2): a weight with zero gradient history then became 0/0 = NaN.
# onnxruntime optimizes the graph itself when it loads it, so the exporter's pass is off.
OPTIMIZE = False

StepFn = Callable[..., tuple[torch.Tensor, ...]]


def param_specs(module: nn.Module) -> tuple[ParamSpec, ...]:
    """The module's trainable tensors in graph order, with ONNX-safe names."""
    specs = tuple(ParamSpec(name=onnx_name(n), torch_name=n, shape=tuple(p.shape))
                  for n, p in module.named_parameters())
    if len({s.name for s in specs}) != len(specs):
        raise LocalInputError("two parameters map to the same ONNX name")
    return specs


def make_step_fn(module: nn.Module, specs: Sequence[ParamSpec], optimizer: str = "sgd", *,
                 proximal: bool = False,
                 hyper: Mapping[str, float] | None = None) -> StepFn:
    """The functional step of one optimizer, inputs and outputs as `step_graph_names` lists.

    The gradient is multiplied by the mask, so a pruned coordinate (mask 0) that comes in as
    0, with zero optimizer state, comes out exactly 0 with zero state, however many steps run
    (the trainer zeroes pruned weights when it takes parameters). One Mul per tensor: masking
    the forward weights and the outputs as well cost 12% of an MLP step for nothing. The
    reported loss is the mean BCE without the proximal term.
    """
    names = [s.torch_name for s in specs]
    n = len(names)
    n_state = len(state_names(specs, optimizer))
    h = dict(DEFAULT_HYPER[optimizer]) | dict(hyper or {})

    def step(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = list(args[:n])
        state = list(args[n:n + n_state])
        masks = list(args[n + n_state:2 * n + n_state])
        rest = args[2 * n + n_state:]
        anchors: list[torch.Tensor] = list(rest[:n]) if proximal else []
        mu = rest[n] if proximal else None
        x, y, lr = rest[n + 1:] if proximal else rest

        def loss_fn(ps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            data = F.binary_cross_entropy_with_logits(
                functional_call(module, dict(zip(names, ps, strict=True)), (x,)), y)
            total = data
            if mu is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(ps, anchors, strict=True))
                total = data + 0.5 * mu * prox
            return total, data

        grads, (_, loss) = grad_and_value(loss_fn, has_aux=True)(params)
        grads = [g * m for g, m in zip(grads, masks, strict=True)]
        new_params, new_state = _update(optimizer, h, params, state, grads, lr)
        return (*new_params, *new_state, loss)

    return step


def _update(optimizer: str, h: Mapping[str, float], params: list[torch.Tensor],
            state: list[torch.Tensor], grads: list[torch.Tensor],
            lr: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One optimizer update, as torch.optim's SGD (momentum, no dampening) and Adam do it."""
    if optimizer == "sgd":
        return [p - lr * g for p, g in zip(params, grads, strict=True)], []
    if optimizer == "sgd_momentum":
        bufs = [h["momentum"] * b + g for b, g in zip(state, grads, strict=True)]
        return [p - lr * b for p, b in zip(params, bufs, strict=True)], bufs
    n = len(params)
    b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
    t = state[-1] + 1.0
    m = [b1 * a + (1.0 - b1) * g for a, g in zip(state[:n], grads, strict=True)]
    v = [b2 * a + (1.0 - b2) * g * g for a, g in zip(state[n:2 * n], grads, strict=True)]
    step_size = lr / (1.0 - torch.pow(b1, t))
    bc2_sqrt = torch.sqrt(1.0 - torch.pow(b2, t))
    new = [p - step_size * a / (torch.sqrt(b) / bc2_sqrt + eps)
           for p, a, b in zip(params, m, v, strict=True)]
    return new, [*m, *v, t]


def make_forward_fn(module: nn.Module, specs: Sequence[ParamSpec], *,
                    masked: bool = False) -> StepFn:
    """The functional forward pass `(x, params...[, masks...]) -> (logits,)`."""
    names = [s.torch_name for s in specs]
    n = len(names)

    def forward(x: torch.Tensor, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ps = list(args[:n])
        if masked:
            ps = [p * m for p, m in zip(ps, args[n:], strict=True)]
        return (functional_call(module, dict(zip(names, ps, strict=True)), (x,)),)

    return forward


def make_eval_fn(module: nn.Module, specs: Sequence[ParamSpec]) -> StepFn:
    """The functional evaluation `(x, y, params...) -> (loss, logits)`."""
    names = [s.torch_name for s in specs]

    def evaluate(x: torch.Tensor, y: torch.Tensor,
                 *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = functional_call(module, dict(zip(names, params, strict=True)), (x,))
        return F.binary_cross_entropy_with_logits(logits, y), logits

    return evaluate


def trace(fn: StepFn, example: Sequence[torch.Tensor]) -> fx.GraphModule:
    """Trace fn to core ATen with symbolic shapes."""
    table = core_aten_decompositions()
    table.pop(torch.ops.aten.empty_like.default, None)  # -> empty_permuted: no ONNX lowering
    gm = make_fx(fn, decomposition_table=dict(table), tracing_mode="symbolic")(*example)
    gm.eval()
    return gm


def export_step(module: nn.Module, n_sites: int, path: Path, optimizer: str = "sgd", *,
                proximal: bool = False) -> GraphSpec:
    """Trace, export, check and write one optimizer's step graph; returns its names."""
    specs = param_specs(module)
    names = replace(step_graph_names(specs, optimizer, proximal=proximal), file=path.name)
    b = _example_batch(specs, n_sites)
    example = _step_inputs(module, specs, optimizer, proximal, b, n_sites, None)
    n_fixed = len(example) - 3
    dynamic = (*([None] * n_fixed), {0: _batch_dim()}, {0: _batch_dim()}, None)
    _export(make_step_fn(module, specs, optimizer, proximal=proximal), example, dynamic, names,
            path)
    err = check_step(module, n_sites, path, optimizer, proximal=proximal)
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


def export_masked_forward(module: nn.Module, n_sites: int, path: Path) -> GraphSpec:
    """Export `(x, params..., masks...) -> logits` (the base of the ORT training model)."""
    specs = param_specs(module)
    names = GraphSpec(file=path.name, inputs=("x", *(s.name for s in specs),
                                              *(f"mask_{s.name}" for s in specs)),
                      outputs=("logits",))
    b = _example_batch(specs, n_sites)
    example = [torch.zeros(b, n_sites), *_current(module), *_current(module)]
    dynamic = ({0: _batch_dim()}, *([None] * 2 * len(specs)))
    _export(make_forward_fn(module, specs, masked=True), example, dynamic, names, path)
    return names


def export_eval(module: nn.Module, n_sites: int, path: Path) -> GraphSpec:
    """Trace, export, check and write the eval graph (loss and logits); returns its names."""
    specs = param_specs(module)
    names = eval_graph_names(specs)
    b = _example_batch(specs, n_sites)
    example = [torch.zeros(b, n_sites), torch.zeros(b), *_current(module)]
    dynamic = ({0: _batch_dim()}, {0: _batch_dim()}, *([None] * len(specs)))
    fn = make_eval_fn(module, specs)
    _export(fn, example, dynamic, names, path)
    sess = _session(path)
    gen = torch.Generator().manual_seed(0)
    for bs in CHECK_BATCH_SIZES:
        x = torch.randn(bs, n_sites, generator=gen)
        y = torch.bernoulli(torch.full((bs,), 0.5), generator=gen)
        params = [p + 0.1 * torch.randn(p.shape, generator=gen) for p in _current(module)]
        with torch.no_grad():
            want = [t.numpy() for t in fn(x, y, *params)]
        feed = {"x": x.numpy(), "y": y.numpy()}
        feed |= {s.name: p.numpy() for s, p in zip(specs, params, strict=True)}
        got = sess.run(None, feed)
        err = max(_rel(g, w) for g, w in zip(got, want, strict=True))
        if not err <= CHECK_TOLERANCE:
            raise LocalInputError(f"{path.name}: onnxruntime eval differs from torch at batch "
                                  f"{bs}: relative error {err:.3g}")
    return names


def check_step(module: nn.Module, n_sites: int, path: Path, optimizer: str = "sgd", *,
               proximal: bool = False, batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
               seed: int = 0, tol: float = CHECK_TOLERANCE) -> float:
    """Run a step graph in onnxruntime against torch; raise if off by more than tol.

    Every output is compared with the same step run eagerly in torch, on random parameters,
    state and masks. The plain SGD graph is also checked against the module's own autograd
    (loss, and the gradient implied by the update, (p - new_p) / lr), which does not share
    the step's code: that is what catches gradients scaled by the batch size. Errors are
    relative to each tensor's largest entry; returns the largest seen.
    """
    specs = param_specs(module)
    names = step_graph_names(specs, optimizer, proximal=proximal)
    fn = make_step_fn(module, specs, optimizer, proximal=proximal)
    sess = _session(path)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        inputs = _step_inputs(module, specs, optimizer, proximal, b, n_sites, gen)
        with torch.no_grad():
            want = [t.numpy() for t in fn(*inputs)]
        out = sess.run(None, {k: t.numpy() for k, t in zip(names.inputs, inputs, strict=True)})
        errs = [_rel(g, w) for g, w in zip(out, want, strict=True)]
        if optimizer == "sgd" and not proximal:
            params = inputs[:len(specs)]
            x, y, lr = inputs[-3:]
            ones = [torch.ones_like(p) for p in params]
            feed = {k: t.numpy() for k, t in zip(names.inputs, [*params, *ones, x, y, lr],
                                                 strict=True)}
            plain = sess.run(None, feed)
            ref_loss, ref_grads = _eager_grads(module, specs, params, x, y)
            errs.append(_rel(plain[-1], ref_loss))
            for p, new, g in zip(params, plain[:-1], ref_grads, strict=True):
                implied = (p.numpy().astype(np.float64) - new.astype(np.float64)) / float(lr)
                errs.append(_rel(implied, g))
        err = max(errs)
        worst = max(worst, err)
        if not err <= tol:
            raise LocalInputError(f"{path.name}: onnxruntime step differs from torch eager at "
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
            raise LocalInputError(f"{path.name}: onnxruntime logits differ from torch at batch "
                                  f"{b}: shape {got.shape}, relative error {err:.3g} > {tol:g}")
    return worst


def _step_inputs(module: nn.Module, specs: Sequence[ParamSpec], optimizer: str,
                 proximal: bool, b: int, n_sites: int,
                 gen: torch.Generator | None) -> list[torch.Tensor]:
    """Step graph inputs in order: zeros/ones for tracing (gen None), random for checks."""
    params = _current(module)
    state = [torch.from_numpy(a) for a in initial_state(specs, optimizer).values()]
    masks = [torch.ones_like(p) for p in params]
    anchors = [p.clone() for p in params] if proximal else []
    extra = [torch.tensor(0.1)] if proximal else []
    x, y = torch.zeros(b, n_sites), torch.zeros(b)
    if gen is not None:
        params = [p + 0.1 * torch.randn(p.shape, generator=gen) for p in params]
        masks = [(torch.rand(p.shape, generator=gen) < 0.8).float() for p in params]
        params = [p * m for p, m in zip(params, masks, strict=True)]
        # Pruned coordinates have zero weight and zero state (as the trainer keeps them):
        # Adam's eps is all that keeps 0 / 0 away there.
        pruned = [*masks, *masks, torch.ones(())][:len(state)]
        state = [torch.rand(s.shape, generator=gen) * 0.01 * m for s, m in zip(state, pruned,
                                                                            strict=True)]
        if optimizer == "adam":
            state[-1] = torch.tensor(3.0)
        anchors = [p + 0.05 * torch.randn(p.shape, generator=gen) for p in anchors]
        x = torch.randn(b, n_sites, generator=gen)
        y = torch.bernoulli(torch.full((b,), 0.5), generator=gen)
    return [*params, *state, *masks, *anchors, *extra, x, y, torch.tensor(0.5)]


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
                                    dynamo=True, external_data=False, optimize=OPTIMIZE,
                                    verbose=False)
    if program is None:
        raise LocalInputError(f"{path.name}: torch.onnx.export returned no program")
    model = _finish(program.model_proto, names, path)
    onnx.save_model(model, str(path))
    log.info("exported %s: trace %.1fs, export %.1fs, %d nodes", path.name, t1 - t0,
             time.perf_counter() - t1, len(model.graph.node))


def _finish(model: onnx.ModelProto, names: GraphSpec, path: Path) -> onnx.ModelProto:
    """Pin IR version and opsets, strip trace metadata, and check names and the batch dim."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > 21:
            raise LocalInputError(f"{path.name}: exported with opset {imp.version} > 21")
        if imp.domain not in ("", "ai.onnx"):
            raise LocalInputError(f"{path.name}: uses non-standard opset domain {imp.domain!r}")
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
        raise LocalInputError(f"{path.name}: graph names {got_in} -> {got_out} are not "
                              f"{names.inputs} -> {names.outputs}")
    x = next(i for i in model.graph.input if i.name == "x")
    if not x.type.tensor_type.shape.dim[0].dim_param:
        raise LocalInputError(f"{path.name}: the batch dimension of x was not kept dynamic")
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
