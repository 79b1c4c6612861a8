"""On-device training through the ONNX step graph, against PyTorch eager as the oracle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.bundles import HIDDEN, K, batches, cohort  # noqa: E402  (one synthetic cohort for all)

from genofed.agent.trainer import StepTrainer, bce_with_logits  # noqa: E402
from genofed.errors import GenofedError  # noqa: E402
from genofed.export.bundle import export_bundle  # noqa: E402
from genofed.models.manifest import Bundle, load_bundle  # noqa: E402
from genofed.models.panel import Panel, Site  # noqa: E402
from genofed.models.zoo import build_model  # noqa: E402

MODEL_NAMES = ("logreg", "mlp")  # every model and optimizer: tests/test_parity.py


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    root = tmp_path_factory.mktemp("bundles")
    rng = np.random.default_rng(0)
    sites = tuple(Site(chrom="chr2", pos=5000 + i, ref="C", alt="T", id=f"rs{i}",
                       af=round(float(rng.uniform(0.05, 0.5)), 4)) for i in range(K))
    panel_path = root / "panel.tsv"
    panel_path.write_text(Panel(build="GRCh38", sites=sites).to_tsv())
    return {m: load_bundle(export_bundle(m, panel_path, root / m, hidden=HIDDEN,
                                         optimizers=("sgd",), ort_training=False))
            for m in MODEL_NAMES}


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_fifty_steps_follow_torch_sgd(bundles: dict[str, Bundle], model: str) -> None:
    b = bundles[model]
    x, y = cohort(200, seed=1)  # 200 = 6 * 32 + 8: every seventh step is a short batch
    trainer = StepTrainer(b)
    losses = trainer.train(x, y, steps=50, batch_size=32, lr=0.2,
                           rng=np.random.default_rng(7))

    module = build_model(model, K, hidden=HIDDEN, seed=0)
    init = b.initial_params()
    with torch.no_grad():
        for spec, p in zip(b.params, module.parameters(), strict=True):
            p.copy_(torch.from_numpy(init[spec.name]))
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    want_losses, sizes = [], []
    for _, idx in zip(range(50), batches(200, 32, np.random.default_rng(7)), strict=False):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            module(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
        loss.backward()
        opt.step()
        want_losses.append(loss.item())
        sizes.append(len(idx))
    assert 8 in sizes
    assert _rel(np.array(losses), np.array(want_losses)) <= 1e-4
    for spec, p in zip(b.params, module.parameters(), strict=True):
        assert _rel(trainer.params[spec.name], p.detach().numpy()) <= 1e-4, spec.name
    with torch.no_grad():
        want_logits = module(torch.from_numpy(x)).numpy()
    assert _rel(trainer.predict_logits(x), want_logits) <= 1e-4


def test_training_lowers_the_loss(bundles: dict[str, Bundle]) -> None:
    x, y = cohort(600, seed=2, signal=2.0)
    x_test, y_test = cohort(400, seed=3, signal=2.0)
    for model in MODEL_NAMES:
        trainer = StepTrainer(bundles[model])
        before = trainer.mean_loss(x_test, y_test)
        losses = trainer.train(x, y, epochs=5, batch_size=32, lr=0.1,
                               rng=np.random.default_rng(0))
        assert len(losses) == 5 * 19  # ceil(600 / 32) = 19 batches per pass
        after = trainer.mean_loss(x_test, y_test)
        assert after < 0.8 * before, model
        accuracy = np.mean((trainer.predict_logits(x_test) > 0) == (y_test > 0.5))
        assert accuracy > 0.75, model


def test_logreg_logits_and_loss_match_numpy(bundles: dict[str, Bundle]) -> None:
    b = bundles["logreg"]
    trainer = StepTrainer(b)
    rng = np.random.default_rng(3)
    params = {"linear_weight": rng.normal(size=(1, K)).astype(np.float32),
              "linear_bias": np.array([-0.3], np.float32)}
    trainer.set_params(params)
    x, y = cohort(50, seed=3)
    z = x.astype(np.float64) @ params["linear_weight"][0] + params["linear_bias"][0]
    assert _rel(trainer.predict_logits(x), z) <= 1e-5
    want = np.mean(np.logaddexp(0.0, z) - y * z)
    assert abs(trainer.mean_loss(x, y) - want) <= 1e-6 * want
    assert bce_with_logits(np.array([1000.0, -1000.0]), np.array([1.0, 0.0])) == 0.0


def test_step_accepts_batch_of_one_and_updates(bundles: dict[str, Bundle]) -> None:
    trainer = StepTrainer(bundles["mlp"])
    layout = bundles["mlp"].layout
    before = layout.flatten(trainer.params)
    x, y = cohort(1, seed=4)
    loss = trainer.step(x, y, lr=0.1)
    assert np.isfinite(loss)
    after = layout.flatten(trainer.params)
    assert not np.array_equal(before, after)
    trainer.set_params(layout.unflatten(before))
    assert np.array_equal(layout.flatten(trainer.params), before)


def test_trainer_rejects_bad_inputs(bundles: dict[str, Bundle]) -> None:
    trainer = StepTrainer(bundles["logreg"])
    x, y = cohort(10, seed=5)
    with pytest.raises(GenofedError, match=rf"x has shape \[10, {K - 1}\], want \[n_samples, "
                                           rf"{K}\] \(one column per panel site\)"):
        trainer.step(x[:, :-1], y, lr=0.1)
    with pytest.raises(GenofedError, match="one column per panel site"):
        trainer.predict_logits(np.zeros((4, K + 2), np.float32))
    with pytest.raises(GenofedError, match=r"y has shape \[9\], want \[10\]"):
        trainer.train(x, y[:-1], steps=1, rng=np.random.default_rng(0))
    with pytest.raises(GenofedError, match="floating point"):
        trainer.step(x.astype(np.int64), y, lr=0.1)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(GenofedError, match="NaN"):
        trainer.step(bad, y, lr=0.1)
    with pytest.raises(GenofedError, match="learning rate"):
        trainer.step(x, y, lr=-1.0)
    with pytest.raises(GenofedError, match="exactly one of epochs or steps"):
        trainer.train(x, y, rng=np.random.default_rng(0))
    with pytest.raises(GenofedError, match="linear_weight has shape"):
        trainer.set_params({"linear_weight": np.zeros((K, 1), np.float32),
                            "linear_bias": np.zeros(1, np.float32)})


def test_device_imports_do_not_pull_in_torch() -> None:
    code = ("import sys, genofed.agent.trainer, genofed.models.manifest; "
            "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]"
