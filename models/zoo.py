"""The model zoo: small torch modules over a panel's standardized dosages (export time only).

Every model maps x, float32 [B, n_sites], to one logit per sample, float32 [B]. The device
never imports this module; it receives the models as ONNX graphs inside a bundle.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genofed.errors import LocalInputError

MODEL_NAMES = ("logreg", "mlp", "cnn")


class LogisticRegression(nn.Module):
    """The polygenic-score model: one linear layer from the sites to a logit."""

    def __init__(self, n_sites: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_sites, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B] for dosages x [B, n_sites]."""
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """Linear-ReLU-Linear with one hidden layer of `hidden` units."""

    def __init__(self, n_sites: int, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_sites, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B] for dosages x [B, n_sites]."""
        return self.fc2(torch.relu(self.fc1(x))).squeeze(-1)


class Conv1D(nn.Module):
    """A 1-D convolution over the ordered panel sites (one input channel), ReLU, linear read-out.

    Neighbouring panel sites are neighbours on the genome, so a kernel sees a run of sites in
    linkage; the read-out weighs every position and channel. The forward pass computes the
    convolution as windows @ kernels (equal to `conv1d`), because the ONNX exporter has no
    translation for `convolution_backward` and the training step is exported whole.
    """

    def __init__(self, n_sites: int, channels: int = 4, kernel: int = 8, stride: int = 4) -> None:
        super().__init__()
        kernel = min(kernel, n_sites)
        self.conv = nn.Conv1d(1, channels, kernel, stride=stride)
        self.positions = (n_sites - kernel) // stride + 1
        self.fc = nn.Linear(channels * self.positions, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B] for dosages x [B, n_sites]."""
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        bias = self.conv.bias
        assert bias is not None
        windows = x.unfold(1, k, s)                                  # [B, positions, kernel]
        h = torch.relu(windows @ self.conv.weight.flatten(1).T + bias)  # [B, positions, C]
        return self.fc(h.transpose(1, 2).flatten(1)).squeeze(-1)


def build_model(name: str, n_sites: int, *, hidden: int = 32, seed: int = 0,
                channels: int = 4, kernel: int = 8, stride: int = 4) -> nn.Module:
    """A zoo model with deterministic initial weights (a function of name, sizes and seed)."""
    if name not in MODEL_NAMES:
        raise LocalInputError(f"unknown model {name!r} (want one of {', '.join(MODEL_NAMES)})")
    if n_sites < 1:
        raise LocalInputError(f"model {name}: n_sites must be >= 1, got {n_sites}")
    model: nn.Module
    with torch.no_grad():
        if name == "logreg":
            model = LogisticRegression(n_sites)
            nn.init.zeros_(model.linear.weight)
            nn.init.zeros_(model.linear.bias)
        elif name == "cnn":
            if min(channels, kernel, stride) < 1:
                raise LocalInputError(f"model cnn: channels, kernel and stride must be >= 1, got "
                                      f"{channels}, {kernel}, {stride}")
            model = Conv1D(n_sites, channels, kernel, stride)
            _uniform_init(model, (model.conv, model.fc), seed)
        else:
            if hidden < 1:
                raise LocalInputError(f"model mlp: hidden must be >= 1, got {hidden}")
            model = MLP(n_sites, hidden)
            _uniform_init(model, (model.fc1, model.fc2), seed)
    return model.float()


def _uniform_init(model: nn.Module, layers: tuple[nn.Module, ...], seed: int) -> None:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights from a seeded generator, zero biases."""
    gen = torch.Generator().manual_seed(seed)
    for layer in layers:
        weight, bias = layer.weight, layer.bias
        assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
        fan_in = weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        weight.copy_(torch.empty_like(weight).uniform_(-bound, bound, generator=gen))
        nn.init.zeros_(bias)


def model_config(name: str, *, hidden: int = 32, seed: int = 0, channels: int = 4,
                 kernel: int = 8, stride: int = 4) -> dict[str, int]:
    """The keyword arguments that rebuild a model, as recorded in a bundle manifest."""
    if name == "mlp":
        return {"hidden": hidden, "seed": seed}
    if name == "cnn":
        return {"channels": channels, "kernel": kernel, "stride": stride, "seed": seed}
    return {"seed": seed}
