"""The DP-SGD step graph against Opacus (the same batch, clip and noise) and against plain
per-example autograd; clipping bounds, the noise-free limit, and the device's side of it.

Tolerance: 1e-5 relative to each tensor's largest entry (float32 in onnxruntime against
float32 in Opacus; the float64 per-example reference is held to the same).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
opacus = pytest.importorskip("opacus")
ort = pytest.importorskip("onnxruntime")

import opacus.optimizers.optimizer as opacus_optimizer  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from opacus import GradSampleModule  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from genofed.agent.dpsgd import (  # noqa: E402
    DpSgd,
    DpStepTrainer,
    poisson_sample,
    standard_normals,
    uniforms,
)
from genofed.agent.trainer import StepTrainer  # noqa: E402
from genofed.errors import GenofedError  # noqa: E402
from genofed.export.bundle import export_bundle  # noqa: E402
from genofed.export.dpsgd_export import (  # noqa: E402
    export_dpsgd_step,
    input_sqnorm,
    opacus_twin,
)
from genofed.export.stepgraph import param_specs  # noqa: E402
from genofed.models.manifest import (  # noqa: E402
    dpsgd_step_graph_names,
    feeds_input_norm,
    load_bundle,
)
from genofed.models.panel import Panel, Site  # noqa: E402
from genofed.models.zoo import build_model  # noqa: E402

pytestmark = [pytest.mark.coordinator,
              # Opacus hooks a module whose input needs no gradient (ours never does)
              pytest.mark.filterwarnings("ignore:Full backward hook is firing")]

K, HIDDEN, B, TOL = 30, 16, 7, 1e-5
MODELS = ("logreg", "mlp", "cnn")


def _module(model: str) -> nn.Module:
    return build_model(model, K, hidden=HIDDEN, channels=4, kernel=8, stride=4)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logreg bundle with plain and DP-SGD steps, every third site pruned (its DP graph
    serves the logreg cases, which feed their own masks)."""
    sites = tuple(Site("chr1", 1000 + i, "A", "G", f"rs{i}", 0.3) for i in range(K))
    mask = {"linear_weight": (np.arange(K) % 3 != 0).astype(np.float32)[None, :],
            "linear_bias": np.ones(1, np.float32)}
    return export_bundle("logreg", Panel("GRCh38", sites), tmp_path_factory.mktemp("b") / "lr",
                         optimizers=("sgd",), dpsgd=("sgd",), ort_training=False, mask=mask)


@pytest.fixture(scope="module")
def graphs(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dp")
    out = {"logreg/sgd": bundle / "dpsgd_sgd.onnx"}
    for key in ("mlp/sgd", "cnn/sgd", "mlp/adam"):
        model, opt = key.split("/")
        export_dpsgd_step(_module(model), K, root / f"{model}_{opt}.onnx", opt)
        out[key] = root / f"{model}_{opt}.onnx"
    return out


class Case(NamedTuple):
    params: list[torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    noise: list[torch.Tensor]


def _case(model: str, seed: int, b: int = B) -> Case:
    gen = torch.Generator().manual_seed(seed)
    params = [p.detach() + 0.2 * torch.randn(p.shape, generator=gen)
              for p in _module(model).parameters()]
    x = torch.randn(b, K, generator=gen)
    y = torch.bernoulli(torch.full((b,), 0.5), generator=gen)
    return Case(params, x, y, [torch.randn(p.shape, generator=gen) for p in params])


def _run_graph(path: Path, model: str, params: list, x: torch.Tensor, y: torch.Tensor,
               noise: list, *, clip: float, sigma: float, expected: float, lr: float,
               optimizer: str = "sgd", masks: list | None = None) -> list[np.ndarray]:
    specs = param_specs(_module(model))
    names = dpsgd_step_graph_names(specs, optimizer)
    masks = masks or [torch.ones_like(p) for p in params]
    state = [torch.zeros_like(p) for p in params] * 2 + [torch.tensor(0.0)] \
        if optimizer == "adam" else []
    values = [*params, *state, *masks, *noise, x, y, torch.tensor(lr), torch.tensor(clip),
              torch.tensor(sigma), torch.tensor(expected)]
    if feeds_input_norm(specs):  # logreg: the device feeds sum_j M_j x_ij^2
        values.append(input_sqnorm(x, masks[0]))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {k: v.numpy().astype(np.float32)
                          for k, v in zip(names.inputs, values, strict=True)})
    return out[:len(params)]


def _opacus(monkeypatch: pytest.MonkeyPatch, model: str, params: list, x: torch.Tensor,
            y: torch.Tensor, noise: list, *, clip: float, sigma: float, expected: int,
            lr: float, optimizer: str = "sgd") -> list[np.ndarray]:
    """One step of Opacus's DPOptimizer, its noise generator replaced by ours."""
    ref = _module(model)
    module = opacus_twin(ref)
    with torch.no_grad():
        for p, v in zip(module.parameters(), params, strict=True):
            p.copy_(v)
    fed: Iterator[torch.Tensor] = iter(noise)

    def fake_noise(std: float, reference: torch.Tensor, generator: object = None,
                   secure_mode: bool = False) -> torch.Tensor:
        z = next(fed)
        assert z.shape == reference.shape
        return std * z

    monkeypatch.setattr(opacus_optimizer, "_generate_noise", fake_noise)
    gsm = GradSampleModule(module)
    inner = torch.optim.Adam(gsm.parameters(), lr=lr) if optimizer == "adam" \
        else torch.optim.SGD(gsm.parameters(), lr=lr)
    opt = DPOptimizer(inner, noise_multiplier=sigma, max_grad_norm=clip,
                      expected_batch_size=expected)
    opt.zero_grad()
    F.binary_cross_entropy_with_logits(gsm(x), y).backward()
    opt.step()
    assert next(fed, None) is None  # every parameter drew its noise once
    return [p.detach().numpy().copy() for p in module.parameters()]


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def _norms(model: str, params: list, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([np.sqrt(sum(float((g ** 2).sum()) for g in g_i))
                     for g_i in _per_example(model, params, x, y, None)])


def _per_example(model: str, params: list, x: torch.Tensor, y: torch.Tensor,
                 masks: list | None) -> list[list[torch.Tensor]]:
    """Each example's (masked) gradient by plain autograd, in float64."""
    module = _module(model)
    names = [n for n, _ in module.named_parameters()]
    out = []
    for i in range(x.shape[0]):
        leaves = [p.double().clone().requires_grad_(True) for p in params]
        logit = functional_call(module, dict(zip(names, leaves, strict=True)),
                                (x[i:i + 1].double(),))
        loss = F.binary_cross_entropy_with_logits(logit, y[i:i + 1].double(), reduction="sum")
        grads = torch.autograd.grad(loss, leaves)
        out.append([g * m.double() for g, m in zip(grads, masks, strict=True)] if masks
                   else list(grads))
    return out


@pytest.mark.parametrize("model", MODELS)
def test_step_matches_opacus_with_the_same_noise(graphs: dict[str, Path], model: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    c = _case(model, seed=1)
    params, x, y, noise = c
    norms = _norms(model, params, x, y)
    clip = float(np.median(norms))  # about half the batch is clipped
    assert (norms > clip * 1.01).sum() >= 2 and (norms < clip * 0.99).sum() >= 2
    kw = {"clip": clip, "sigma": 0.8, "lr": 0.3}
    got = _run_graph(graphs[f"{model}/sgd"], model, params, x, y, noise,
                     expected=B + 3, **kw)
    want = _opacus(monkeypatch, model, params, x, y, noise, expected=B + 3,
                   **kw)
    start = [p.numpy() for p in params]
    for g, w, p0 in zip(got, want, start, strict=True):
        assert _rel(g - p0, w - p0) <= TOL  # the update itself, not the weights it moves


def test_adam_step_matches_opacus(graphs: dict[str, Path],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    c = _case("mlp", seed=2)
    params, x, y, noise = c
    kw = {"clip": 0.5, "sigma": 1.3, "lr": 0.1}  # an update of ~lr: float32 weights resolve it
    got = _run_graph(graphs["mlp/adam"], "mlp", params, x, y, noise,
                     expected=B, optimizer="adam", **kw)
    want = _opacus(monkeypatch, "mlp", params, x, y, noise, expected=B,
                   optimizer="adam", **kw)
    start = [p.numpy() for p in params]
    for g, w, p0 in zip(got, want, start, strict=True):
        assert _rel(g - p0, w - p0) <= TOL


@pytest.mark.parametrize("model", MODELS)
def test_masked_step_matches_per_example_autograd(graphs: dict[str, Path], model: str) -> None:
    c = _case(model, seed=3)
    params, x, y, noise = c
    gen = torch.Generator().manual_seed(4)
    masks = [(torch.rand(p.shape, generator=gen) < 0.6).float() if p.dim() > 1
             else torch.ones_like(p) for p in params]
    params = [p * m for p, m in zip(params, masks, strict=True)]
    per = _per_example(model, params, x, y, masks)
    norms = [math.sqrt(sum(float((g ** 2).sum()) for g in gi)) for gi in per]
    clip, sigma, expected, lr = float(np.median(norms)), 0.6, 9.0, 1.0
    want = [sum(min(1.0, clip / (n + 1e-6)) * gi[j] for gi, n in zip(per, norms, strict=True))
            for j in range(len(params))]
    want = [((w + sigma * clip * z.double()) * m / expected).numpy()
            for w, z, m in zip(want, noise, masks, strict=True)]
    got = _run_graph(graphs[f"{model}/sgd"], model, params, x, y, noise,
                     clip=clip, sigma=sigma, expected=expected, lr=lr, masks=masks)
    for g, w, p0, m in zip(got, want, params, masks, strict=True):
        assert _rel(p0.numpy() - g, w) <= TOL
        assert not g[m.numpy() == 0].any()  # pruned weights stay exactly 0


@pytest.mark.parametrize("model", MODELS)
def test_one_huge_example_contributes_at_most_the_clip(graphs: dict[str, Path],
                                                       model: str) -> None:
    c = _case(model, seed=5)
    params, x, y, _ = c
    x, y = x.clone(), y.clone()
    x[0] *= 1000.0
    module = _module(model)
    names = [n for n, _ in module.named_parameters()]
    logit = functional_call(module, dict(zip(names, params, strict=True)), (x[:1],))
    y[0] = float(logit[0] < 0)  # confidently wrong: its gradient is huge, not saturated
    zero = [torch.zeros_like(p) for p in params]
    clip = 0.25
    assert _norms(model, params, x[:1], y[:1])[0] > 100 * clip

    def summed(xb: torch.Tensor, yb: torch.Tensor) -> np.ndarray:
        new = _run_graph(graphs[f"{model}/sgd"], model, params, xb, yb, zero,
                         clip=clip, sigma=0.0, expected=1.0, lr=1.0)
        return np.concatenate([(p.numpy() - n).ravel() for p, n in zip(params, new,
                                                                          strict=True)])

    alone = summed(x[:1], y[:1])
    assert np.linalg.norm(alone) <= clip * (1 + 1e-5)
    assert np.linalg.norm(alone) >= clip * 0.999  # clipped to the bound, not dropped
    contribution = summed(x, y) - summed(x[1:], y[1:])
    assert np.linalg.norm(contribution) <= clip * (1 + 1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_without_noise_and_clipping_it_is_the_plain_step(graphs: dict[str, Path],
                                                         model: str) -> None:
    c = _case(model, seed=6)
    params, x, y, _ = c
    zero = [torch.zeros_like(p) for p in params]
    got = _run_graph(graphs[f"{model}/sgd"], model, params, x, y, zero,
                     clip=1e6, sigma=0.0, expected=float(B), lr=0.5)
    module = _module(model)
    leaves = [p.clone().requires_grad_(True) for p in params]
    names = [n for n, _ in module.named_parameters()]
    loss = F.binary_cross_entropy_with_logits(
        functional_call(module, dict(zip(names, leaves, strict=True)), (x,)), y)
    grads = torch.autograd.grad(loss, leaves)
    for g, p, d in zip(got, params, grads, strict=True):
        assert _rel(g, (p - 0.5 * d).detach().numpy()) <= TOL


def test_bundle_dp_graph_equals_its_plain_step_without_noise(bundle: Path) -> None:
    b = load_bundle(bundle)
    assert set(b.dpsgd) == {"sgd"}
    from support.bundles import cohort

    x, y = cohort(64, seed=2)
    plain = StepTrainer(b)
    plain.train(x, y, steps=1, batch_size=64, lr=0.5, rng=np.random.default_rng(0))
    dp = DpStepTrainer(b)
    _, spend = dp.train_dp(x, y, dp=DpSgd(clip=1e6, noise_multiplier=0.0, sample_rate=1.0),
                           steps=1, lr=0.5)
    assert _rel(dp.weights(), plain.weights()) <= TOL
    assert spend.steps == 1 and spend.examples == 64 and spend.sampling == "poisson"


def test_train_dp_clips_with_the_input_norms_it_computes_once(bundle: Path) -> None:
    """Logistic regression's DP step takes each example's masked input norm as an input; the
    trainer computes them once for all its examples. One full-batch step with half of the
    examples clipped, no noise, equals per-example autograd's clipped mean (every third site
    pruned, so a norm taken without the mask would clip wrongly)."""
    from support.bundles import cohort

    from genofed.export.dpsgd_export import reference_dp_grads
    from genofed.models.zoo import build_model

    b = load_bundle(bundle)
    x, y = cohort(40, seed=5)
    dp = DpStepTrainer(b)
    w0 = dp.weights()
    w0[:] = np.random.default_rng(3).normal(0, 0.3, w0.size).astype(np.float32)
    dp.set_weights(w0)
    w0 = dp.weights()  # pruned coordinates zeroed
    module = build_model(b.model, b.n_sites, **b.model_config)
    tensors = b.layout.tensors(w0)
    params = [torch.from_numpy(tensors[s.name]) for s in b.params]
    masks = [torch.from_numpy(v) for v in b.layout.tensors(b.layout.keep.astype(np.float32))
             .values()]
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    norms = [np.sqrt(sum(float((g ** 2).sum()) for g in reference_dp_grads(
        module, b.params, params, masks, [torch.zeros_like(p) for p in params], xt[i:i + 1],
        yt[i:i + 1], clip=1e30, sigma=0.0, expected=1.0))) for i in range(len(x))]
    clip = float(np.median(norms))
    want = reference_dp_grads(module, b.params, params, masks, [torch.zeros_like(p) for p in
                                                                 params],
                              xt, yt, clip=clip, sigma=0.0, expected=float(len(x)))
    dp.train_dp(x, y, dp=DpSgd(clip=clip, noise_multiplier=0.0, sample_rate=1.0), steps=1,
                lr=0.5)
    implied = (w0.astype(np.float64) - dp.weights()) / 0.5
    assert _rel(implied, b.layout.flatten({s.name: g for s, g in zip(b.params, want,
                                                                      strict=True)})) <= 1e-4


def _bytes_from(seed: int) -> Callable[[int], bytes]:
    """A deterministic byte stream (SHAKE-256), so the statistics below cannot flake."""
    counter = iter(range(1 << 62))

    def randbytes(n: int) -> bytes:
        return hashlib.shake_256(f"{seed}:{next(counter)}".encode()).digest(n)

    return randbytes


def test_noise_is_standard_normal_and_fresh() -> None:
    from scipy import stats

    z = standard_normals(200_001, _bytes_from(0))
    assert z.shape == (200_001,)
    assert abs(z.mean()) < 5 / math.sqrt(z.size) and abs(z.var() - 1) < 0.02
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert stats.kstest(z[:50_000] ** 2, "chi2", args=(1,)).pvalue > 1e-3
    a, b = standard_normals(1000), standard_normals(1000)  # os.urandom: never the same twice
    assert not np.array_equal(a, b)
    u = uniforms(100_000, _bytes_from(1))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_poisson_sampling_rate() -> None:
    sizes = [len(poisson_sample(1000, 0.05, _bytes_from(s))) for s in range(200)]
    assert abs(np.mean(sizes) - 50) < 2.0 and abs(np.var(sizes) - 47.5) < 12


def test_empty_batch_takes_a_noise_only_step(bundle: Path) -> None:
    b = load_bundle(bundle)
    t = DpStepTrainer(b, randbytes=_bytes_from(7))
    x, y = np.ones((3, K), np.float32), np.array([0, 1, 1], np.float32)
    dp = DpSgd(clip=2.0, noise_multiplier=1.5, sample_rate=1e-9)  # every batch is empty
    losses, spend = t.train_dp(x, y, dp=dp, steps=1, lr=0.1)
    assert losses == [] and spend.steps == 1
    bytes_used = _bytes_from(7)
    poisson_sample(3, 1e-9, bytes_used)  # the sampling's draw
    kept = b.layout.keep
    z = np.zeros(b.n_params, np.float32)  # noise is drawn for the trained coordinates only
    z[kept] = standard_normals(int(kept.sum()), bytes_used)
    want = -0.1 * 1.5 * 2.0 * z / (1e-9 * 3)  # from the zero initial logreg
    assert _rel(t.weights(), want) <= 1e-4
    assert not t.weights()[~kept].any() and kept.sum() == 21  # the pruned stay exactly 0


def test_dp_config_is_validated_and_round_trips() -> None:
    dp = DpSgd(clip=1.0, noise_multiplier=1.1, sample_rate=0.01)
    assert DpSgd.from_json(dp.to_json()) == dp
    assert dp.steps_for_epochs(2) == 200
    for bad in ({"clip": 0.0, "noise_multiplier": 1.0, "sample_rate": 0.1},
                {"clip": 1.0, "noise_multiplier": -1.0, "sample_rate": 0.1},
                {"clip": 1.0, "noise_multiplier": 1.0, "sample_rate": 1.5},
                {"clip": float("nan"), "noise_multiplier": 1.0, "sample_rate": 0.1},
                {"clip": 1.0, "noise_multiplier": 1.0},
                {"clip": "1", "noise_multiplier": 1.0, "sample_rate": 0.1}):
        with pytest.raises(GenofedError, match="dpsgd: ") as err:
            DpSgd.from_json(bad)
        assert "\n" not in str(err.value)


def test_dp_trainer_refuses_plain_training_and_bundles_without_dp(bundle: Path,
                                                                  tmp_path: Path) -> None:
    b = load_bundle(bundle)
    with pytest.raises(GenofedError, match="train_dp"):
        DpStepTrainer(b).train(np.zeros((2, K)), np.zeros(2), steps=1, rng=None)
    with pytest.raises(GenofedError, match="no DP-SGD step graph for optimizer 'adam'"):
        DpStepTrainer(b, optimizer="adam")
