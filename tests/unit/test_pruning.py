"""Pruning: exact zeros through training, updates of unpruned coordinates only, smaller bundles."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from support.bundles import cohort

pytest.importorskip("torch")

from genofed.agent.ort_training import make_trainer
from genofed.errors import GenofedError, LocalInputError
from genofed.export.prune import (
    GradualSchedule,
    export_structured,
    magnitude_mask,
    structured,
)
from genofed.models.layout import ParamLayout
from genofed.models.manifest import ParamSpec, load_bundle


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum", "adam"])
@pytest.mark.parametrize("backend", ["step", "ort-training"])
def test_pruned_weights_stay_exactly_zero(exported: Path, optimizer: str,
                                          backend: str) -> None:
    b = load_bundle(exported / "mlp")
    if backend == "ort-training" and b.ort is None:
        pytest.skip("onnxruntime-training is not installed here")
    keep = b.layout.keep
    assert 0 < (~keep).sum() < keep.size
    x, y = cohort(300, seed=5)
    t = make_trainer(b, backend=backend, optimizer=optimizer)
    # start from weights that are non-zero everywhere: set_params must zero the pruned ones
    t.set_params({k: v + 0.05 for k, v in b.initial_params().items()})
    t.train(x, y, epochs=20, batch_size=16, lr=0.05, rng=np.random.default_rng(0))
    w = b.layout.flatten(t.params)
    assert np.all(w[~keep] == 0.0)
    assert np.count_nonzero(w[keep]) == keep.sum()  # the unpruned ones did train
    delta = w - b.layout.flatten(b.initial_params())
    update = b.layout.trained(delta)
    assert update.shape == (b.layout.n_trained,) == (int(keep.sum()),)
    assert np.array_equal(b.layout.expand(update), np.where(keep, delta, 0.0))


@pytest.mark.parametrize("backend", ["step", "ort-training"])
def test_trainer_takes_and_gives_flat_weights_with_pruned_coordinates_zeroed(
        exported: Path, backend: str) -> None:
    b = load_bundle(exported / "mlp")
    if backend == "ort-training" and b.ort is None:
        pytest.skip("onnxruntime-training is not installed here")
    layout = b.layout
    t = make_trainer(b, backend=backend, optimizer="adam")
    w = np.random.default_rng(0).normal(size=layout.n_params)  # float64, non-zero everywhere
    t.set_weights(w)
    got = t.weights()
    assert got.dtype == np.float32 and got.shape == (layout.n_params,)
    assert np.all(got[~layout.keep] == 0.0)
    assert np.array_equal(got[layout.keep], w[layout.keep].astype(np.float32))
    assert layout.flatten(t.params).tobytes() == got.tobytes()
    t.set_params(layout.unflatten(w))
    assert t.weights().tobytes() == got.tobytes()
    bad = w.copy()
    bad[-1] = np.nan  # the output bias
    with pytest.raises(LocalInputError, match="parameter fc2_bias has non-finite values"):
        t.set_weights(bad)
    with pytest.raises(LocalInputError, match=rf"shape \[{layout.n_params - 1}\], want "):
        t.set_weights(w[:-1])
    assert t.weights().tobytes() == got.tobytes()  # a refused vector changed nothing


def test_packing_helpers_round_trip_and_reject_bad_lengths() -> None:
    specs = (ParamSpec("w", "w", (2, 3)), ParamSpec("b", "b", (2,)))
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) + 1, "b": np.ones(2, np.float32)}
    mask = {"w": np.array([[1, 0, 1], [0, 0, 1]], np.float32), "b": np.ones(2, np.float32)}
    layout = ParamLayout.of(specs, mask)
    packed = layout.trained(layout.flatten(params))
    assert packed.tolist() == [1.0, 3.0, 6.0, 1.0, 1.0]
    back = layout.unflatten(layout.expand(packed))
    assert back["w"].tolist() == [[1, 0, 3], [0, 0, 6]] and back["b"].tolist() == [1, 1]
    with pytest.raises(GenofedError, match=r"want \[5\]"):
        layout.expand(packed[:-1])
    with pytest.raises(GenofedError, match=r"shape \[7\], want \[8\]"):
        layout.trained(np.zeros(7, np.float32))


def test_magnitude_mask_is_global_keeps_biases_and_never_revives() -> None:
    specs = (ParamSpec("a", "a", (2, 2)), ParamSpec("bias", "bias", (2,)),
             ParamSpec("c", "c", (1, 4)))
    params = {"a": np.array([[0.1, -5.0], [0.2, 3.0]], np.float32),
              "bias": np.array([0.0, 0.0], np.float32),
              "c": np.array([[0.05, 4.0, -0.3, 2.0]], np.float32)}
    m = magnitude_mask(params, specs, 0.5)
    assert m["bias"].tolist() == [1.0, 1.0]
    assert m["a"].tolist() == [[0, 1], [0, 1]] and m["c"].tolist() == [[0, 1, 0, 1]]
    grown = {**params, "a": np.array([[9.0, -5.0], [0.2, 3.0]], np.float32)}
    m2 = magnitude_mask(grown, specs, 0.625, current=m)
    assert m2["a"][0, 0] == 0.0  # pruned stays pruned however large it grew
    assert int(sum(v.sum() for k, v in m2.items() if k != "bias")) == 3
    with pytest.raises(GenofedError, match="sparsity"):
        magnitude_mask(params, specs, 1.0)


def test_gradual_schedule_is_cubic_and_monotone() -> None:
    s = GradualSchedule(final=0.9, begin=2, end=10)
    got = [s.sparsity(r) for r in range(14)]
    assert got[:3] == [0.0, 0.0, 0.0] and got[10:] == [0.9] * 4
    assert all(a <= b for a, b in itertools.pairwise(got))
    assert abs(s.sparsity(6) - 0.9 * (1 - 0.5 ** 3)) < 1e-12
    with pytest.raises(LocalInputError):
        GradualSchedule(final=1.0, end=3)


def test_structured_pruning_exports_a_smaller_equivalent_bundle(exported: Path,
                                                                 tmp_path: Path) -> None:
    b = load_bundle(exported / "mlp")
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=v.shape).astype(np.float32) * b.mask()[k]
              for k, v in b.initial_params().items()}
    # sites 0-9 and hidden units 0-3 carry no weight: dropping them changes no logit
    params["fc1_weight"][:, :10] = 0.0
    params["fc2_weight"][0, :4] = 0.0
    panel, small, cfg = structured(b, params, sites=20, hidden=12)
    assert len(panel) == 20 and [s.id for s in panel.sites] == [f"rs{i}" for i in range(10, 30)]
    assert small["fc1_weight"].shape == (12, 20) and cfg["hidden"] == 12
    out = export_structured(b, params, tmp_path / "small", sites=20, hidden=12,
                            optimizers=("sgd",), ort_training=False)
    sb = load_bundle(out)
    assert sb.n_params < b.n_params and sb.n_sites == 20
    x, _ = cohort(40, seed=9)
    big, little = make_trainer(b), make_trainer(sb)
    big.set_params(params)
    assert np.allclose(little.predict_logits(x[:, 10:]), big.predict_logits(x), atol=1e-5)
    with pytest.raises(GenofedError, match="hidden"):
        structured(load_bundle(exported / "logreg"), load_bundle(
            exported / "logreg").initial_params(), hidden=3)
