"""DP-SGD inside the exported training step: per-example clipping, and noise fed in as input.

The step is Opacus's (1.x, `DPOptimizer` with `loss_reduction="mean"`), then the optimizer:

    g_i  = the gradient of example i's loss, masked    c_i = min(1, clip / (||g_i|| + 1e-6))
    grad = mask * (sum_i c_i g_i + noise_multiplier * clip * z) / expected_batch

||g_i|| is the norm of the whole (masked) parameter vector; z is one standard normal tensor per
parameter, a graph input (`noise_<name>`): the graph never draws randomness (no ONNX
`RandomNormal`, whose seed would sit in a bundle everyone holds), the device feeds it from its
own cryptographic randomness (genofed.agent.dpsgd). `expected_batch` is Opacus's divisor, the
expected size of a Poisson-sampled batch (sample rate x examples), not the batch's own size.
Clip, noise multiplier and divisor are graph inputs, not bundle constants: the round's signed
task sets them, and one bundle serves any privacy budget without a new export.

Per-example gradients, two routes, both traced by `stepgraph.trace` (make_fx, symbolic batch):
- "ghost" (the zoo's models): closed forms from each layer's input a_i and output gradient e_i
  (the gradient of the per-example losses' sum with respect to zero "probes" added to the
  layer's outputs). A linear layer's masked per-example weight gradient is (e_i a_i^T) * M, of
  squared norm sum_j e_ij^2 (a_i^2 M^T)_j; the clipped sum is (c * e)^T a. For logistic
  regression (one linear layer, one output) a_i is the example x_i itself, so (M x_i^2) is
  data: the device computes it once for all its examples (genofed.agent.dpsgd) and feeds it as
  `x_sqnorm`, and the step makes no pass over x^2 (at 10^5 sites that pass, a [B, sites]
  square and a matmul, was half the step). The convolution (as
  the zoo writes it, windows @ kernels) has few weights: its per-example gradients are formed
  explicitly with one batched matmul. No [batch, sites] per-example tensor is materialized.
- "vmap" (any other module): `torch.func.vmap(grad(...))` over the examples. It traces and runs
  for all three zoo models too (once Conv1D indexes its kernel with a view, not a select, whose
  backward under vmap froze the batch size), but materializes [batch, parameters]: logistic
  regression at 10^5 sites took 2x the plain step (the ghost route is the benchmark's figure).
Not supported: the FedProx term (a DP step graph has no anchor inputs). Export and its checks:
genofed.export.dpsgd_export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from genofed.errors import LocalInputError
from genofed.export.stepgraph import StepFn, _update
from genofed.models.manifest import DEFAULT_HYPER, ParamSpec, feeds_input_norm, state_names
from genofed.models.zoo import MLP, Conv1D, LogisticRegression

NORM_EPS = 1e-6  # Opacus's: c_i = min(1, clip / (||g_i|| + 1e-6))
Tensor = torch.Tensor


@dataclass(frozen=True)
class Tap:
    """One layer seen by the ghost route: its parameters and its input a.

    kind "linear": a [B, in], output [B, out], weight [out, in]; kind "windows": a [B, P, k],
    output [B, P, out], weight [out, 1, k] (the zoo's convolution).
    """

    kind: str
    weight: str
    bias: str
    a: Tensor


TapFn = Callable[[nn.Module, Mapping[str, Tensor], Tensor, Sequence[Tensor]],
                 tuple[Tensor, list[Tap]]]


def _logreg(m: nn.Module, p: Mapping[str, Tensor], x: Tensor,
            probe: Sequence[Tensor]) -> tuple[Tensor, list[Tap]]:
    z = F.linear(x, p["linear.weight"], p["linear.bias"]) + probe[0]
    return z.squeeze(-1), [Tap("linear", "linear.weight", "linear.bias", x)]


def _mlp(m: nn.Module, p: Mapping[str, Tensor], x: Tensor,
         probe: Sequence[Tensor]) -> tuple[Tensor, list[Tap]]:
    z1 = F.linear(x, p["fc1.weight"], p["fc1.bias"]) + probe[0]
    h = torch.relu(z1)
    z2 = F.linear(h, p["fc2.weight"], p["fc2.bias"]) + probe[1]
    return z2.squeeze(-1), [Tap("linear", "fc1.weight", "fc1.bias", x),
                            Tap("linear", "fc2.weight", "fc2.bias", h)]


def _cnn(m: nn.Module, p: Mapping[str, Tensor], x: Tensor,
         probe: Sequence[Tensor]) -> tuple[Tensor, list[Tap]]:
    assert isinstance(m, Conv1D)
    k, s = m.conv.kernel_size[0], m.conv.stride[0]
    windows = x.unfold(1, k, s)                                      # [B, P, k]
    z1 = windows @ p["conv.weight"].flatten(1).T + p["conv.bias"] + probe[0]  # [B, P, C]
    h = torch.relu(z1).transpose(1, 2).flatten(1)                  # [B, C * P]
    z2 = F.linear(h, p["fc.weight"], p["fc.bias"]) + probe[1]
    return z2.squeeze(-1), [Tap("windows", "conv.weight", "conv.bias", windows),
                            Tap("linear", "fc.weight", "fc.bias", h)]


def _probe_shapes(m: nn.Module, b: int | torch.SymInt) -> list[tuple[int | torch.SymInt, ...]]:
    if isinstance(m, LogisticRegression):
        return [(b, 1)]
    if isinstance(m, MLP):
        return [(b, m.fc1.out_features), (b, 1)]
    assert isinstance(m, Conv1D)
    return [(b, m.positions, m.conv.out_channels), (b, 1)]


TAPS: Mapping[type, TapFn] = {LogisticRegression: _logreg, MLP: _mlp, Conv1D: _cnn}


def route_of(module: nn.Module) -> str:
    """The per-example route the step of this module takes: "ghost" or "vmap"."""
    return "ghost" if type(module) in TAPS else "vmap"


def _ghost(module: nn.Module, names: Sequence[str], params: Sequence[Tensor],
           masks: Sequence[Tensor], x: Tensor, y: Tensor, clip: Tensor, expected: Tensor,
           x_sqnorm: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
    """sum_i c_i g_i / E by the closed forms (unmasked: the step masks once), and the mean
    loss. `x_sqnorm`: the first layer's (M x^2)_i, fed (one output row only)."""
    p = dict(zip(names, params, strict=True))
    mask = dict(zip(names, masks, strict=True))
    tap_fn = TAPS[type(module)]
    probes = [x.new_zeros(shape) for shape in _probe_shapes(module, x.shape[0])]

    layers: list[Tap] = []  # what the taps are, kept aside: grad's aux holds tensors only

    def loss_sum(pr: list[Tensor]) -> tuple[Tensor, tuple[Tensor, list[Tensor]]]:
        logits, taps = tap_fn(module, p, x, pr)
        layers[:] = taps
        total = F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        return total, (total, [t.a for t in taps])

    outgrads, (_, (total, inputs)) = grad_and_value(loss_sum, has_aux=True)(probes)
    norm2 = x.new_zeros(x.shape[0])
    per_layer = []
    for i, (tap, e, a) in enumerate(zip(layers, outgrads, inputs, strict=True)):
        mw, mb = mask[tap.weight], mask[tap.bias]
        if tap.kind == "linear" and i == 0 and x_sqnorm is not None:
            e2 = e * e  # [B, 1]: a single output, whose (M x^2)_i the device fed
            norm2 = norm2 + e2[:, 0] * x_sqnorm + e2 @ mb
            per_layer.append((tap, e, a, None))
        elif tap.kind == "linear":
            e2 = e * e
            # (M a^2)^T, not a^2 M^T: onnxruntime ran the latter 3-4x slower at 10^5 sites
            norm2 = norm2 + (e2 * (mw @ (a * a).T).T).sum(1) + e2 @ mb
            per_layer.append((tap, e, a, None))
        else:
            g_w = (e.transpose(1, 2) @ a) * mw.flatten(1)          # [B, C, k]: explicit
            g_b = e.sum(1)                                          # [B, C]
            norm2 = norm2 + (g_w * g_w).sum((1, 2)) + (g_b * g_b) @ mb
            per_layer.append((tap, g_b, a, g_w))
    c = (clip / (torch.sqrt(norm2) + NORM_EPS)).clamp(max=1.0) / expected
    summed: dict[str, Tensor] = {}
    for tap, e, a, g_w in per_layer:  # unmasked: the step masks the noised sum once
        ce = e * c.unsqueeze(-1)
        if g_w is None:
            summed[tap.weight] = ce.T @ a
        else:
            summed[tap.weight] = torch.einsum("b,bck->ck", c, g_w).reshape(mask[tap.weight].shape)
        summed[tap.bias] = ce.sum(0)
    if set(summed) != set(names):
        raise LocalInputError(f"dpsgd: the taps of {type(module).__name__} cover "
                              f"{sorted(summed)}, not its parameters {sorted(names)}")
    return [summed[n] for n in names], total / x.shape[0]


def _vmapped(module: nn.Module, names: Sequence[str], params: Sequence[Tensor],
             masks: Sequence[Tensor], x: Tensor, y: Tensor, clip: Tensor, expected: Tensor
             ) -> tuple[list[Tensor], Tensor]:
    """The same by torch.func: vmap over each example's gradient (any module)."""
    def one(ps: list[Tensor], xi: Tensor, yi: Tensor) -> tuple[Tensor, Tensor]:
        out = functional_call(module, dict(zip(names, ps, strict=True)), (xi.unsqueeze(0),))
        loss = F.binary_cross_entropy_with_logits(out, yi.unsqueeze(0), reduction="sum")
        return loss, loss

    per, losses = vmap(grad(one, has_aux=True), in_dims=(None, 0, 0))(list(params), x, y)
    per = [g * m for g, m in zip(per, masks, strict=True)]
    norms = torch.stack([g.reshape(g.shape[0], -1).norm(2, dim=-1) for g in per], 1).norm(2, 1)
    c = (clip / (norms + NORM_EPS)).clamp(max=1.0) / expected
    return [torch.einsum("i,i...", c, g) for g in per], losses.mean()


def make_dpsgd_step_fn(module: nn.Module, specs: Sequence[ParamSpec], optimizer: str = "sgd",
                       *, hyper: Mapping[str, float] | None = None,
                       route: str | None = None) -> StepFn:
    """The functional DP-SGD step, inputs and outputs as `dpsgd_step_graph_names` lists."""
    names = [s.torch_name for s in specs]
    n = len(names)
    n_state = len(state_names(specs, optimizer))
    h = dict(DEFAULT_HYPER[optimizer]) | dict(hyper or {})
    route = route or route_of(module)
    if route not in ("ghost", "vmap") or (route == "ghost" and type(module) not in TAPS):
        raise LocalInputError(f"dpsgd: no route {route!r} for {type(module).__name__}")
    fed = feeds_input_norm(specs)
    if fed and route != "ghost":
        raise LocalInputError(f"dpsgd: {type(module).__name__} takes its input norms fed, "
                              "which only the ghost route reads")

    def step(*args: Tensor) -> tuple[Tensor, ...]:
        params = list(args[:n])
        state = list(args[n:n + n_state])
        masks = list(args[n + n_state:2 * n + n_state])
        noise = list(args[2 * n + n_state:3 * n + n_state])
        x, y, lr, clip, sigma, expected = args[3 * n + n_state:3 * n + n_state + 6]
        if route == "ghost":
            summed, loss = _ghost(module, names, params, masks, x, y, clip, expected,
                                  args[-1] if fed else None)
        else:
            summed, loss = _vmapped(module, names, params, masks, x, y, clip, expected)
        # (sum_i c_i g_i + sigma C z) m / E as Opacus computes it, up to float rounding: 1/E
        # is folded into the c_i and the noise's scalar, because elementwise passes over
        # parameter-sized tensors are most of an MLP's step.
        grads = [(s + z * (sigma * clip / expected)) * m
                 for s, z, m in zip(summed, noise, masks, strict=True)]
        new_params, new_state = _update(optimizer, h, params, state, grads, lr)
        return (*new_params, *new_state, loss)

    return step
