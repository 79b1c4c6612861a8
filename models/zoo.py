"""The model zoo: small torch modules over a panel's standardized dosages (export time only).

Every model maps x, float32 [B, n_sites], to one logit per sample, float32 [B]. The device
never imports this module; it receives the models as ONNX graphs inside a bundle.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genofed.errors import GenofedError

MODEL_NAMES = ("logreg", "mlp")


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


def build_model(name: str, n_sites: int, *, hidden: int = 32, seed: int = 0) -> nn.Module:
    """A zoo model with deterministic initial weights (a function of name, sizes and seed)."""
    if name not in MODEL_NAMES:
        raise GenofedError(f"unknown model {name!r} (want one of {', '.join(MODEL_NAMES)})")
    if n_sites < 1:
        raise GenofedError(f"model {name}: n_sites must be >= 1, got {n_sites}")
    model: nn.Module
    with torch.no_grad():
        if name == "logreg":
            model = LogisticRegression(n_sites)
            nn.init.zeros_(model.linear.weight)
            nn.init.zeros_(model.linear.bias)
        else:
            if hidden < 1:
                raise GenofedError(f"model mlp: hidden must be >= 1, got {hidden}")
            model = MLP(n_sites, hidden)
            gen = torch.Generator().manual_seed(seed)
            for layer in (model.fc1, model.fc2):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound,
                                                                           generator=gen))
                nn.init.zeros_(layer.bias)
    return model.float()


def model_config(name: str, *, hidden: int = 32, seed: int = 0) -> dict[str, int]:
    """The keyword arguments that rebuild a model, as recorded in a bundle manifest."""
    return {"hidden": hidden, "seed": seed} if name == "mlp" else {"seed": seed}
