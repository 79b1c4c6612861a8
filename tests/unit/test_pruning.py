"""Pruning: exact zeros through training, updates of unpruned coordinates only, smaller bundles."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import run_genofed
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


# Through the command a coordinator runs: `genofed export` with pruning flags (in this
# process, through the CLI's `main`: the same parsing, checks and printing), and `genofed
# aggregator model` for the global model to prune from.

K, HIDDEN, N_WEIGHTS = 40, 8, 40 * 8 + 8  # fc1_weight and fc2_weight entries
WEIGHTS = ("fc1_weight", "fc2_weight")


def _weights(mask: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([mask[k].ravel() for k in WEIGHTS])


def _main(argv: list[str]) -> int:
    """The `genofed` command in this process, its logging set-up undone afterwards."""
    from genofed.cli.main import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _genofed(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`genofed ARGV` in this process: exit status, stdout, stderr."""
    status = _main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-site panel and MLP weights non-zero everywhere (biases too), as init.npz."""
    from genofed.models.panel import Panel, Site

    root = tmp_path_factory.mktemp("coordinator")
    rng = np.random.default_rng(11)
    sites = tuple(Site(chrom="chr1", pos=1000 + 10 * i, ref="A", alt="G", id=f"rs{i}",
                       af=round(float(rng.uniform(0.05, 0.95)), 4)) for i in range(K))
    (root / "panel.tsv").write_text(Panel(build="GRCh38", sites=sites).to_tsv())
    # Columns of very different scale, so the sites' importances differ clearly.
    init = {"fc1_weight": rng.normal(size=(HIDDEN, K)) * rng.uniform(0.1, 2.0, size=K),
            "fc1_bias": rng.normal(size=HIDDEN), "fc2_weight": rng.normal(size=(1, HIDDEN)),
            "fc2_bias": rng.normal(size=1)}
    np.savez(root / "init.npz", **{k: v.astype(np.float32) for k, v in init.items()})
    return root


def _export(coordinator: Path, out: Path, *flags: str) -> str:
    args = ["export", "--model", "mlp", "--hidden", str(HIDDEN), "--panel",
            str(coordinator / "panel.tsv"), "--out", str(out), *flags]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert _main(args) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def pruned(coordinator: Path) -> tuple[Path, str]:
    """`genofed export --init init.npz --prune 0.6`: the bundle and what the command printed."""
    out = coordinator / "pruned"
    return out, _export(coordinator, out, "--init", str(coordinator / "init.npz"),
                        "--prune", "0.6")


def test_cli_prune_reaches_the_sparsity_over_weight_matrices_only(
        coordinator: Path, pruned: tuple[Path, str]) -> None:
    path, printed = pruned
    b = load_bundle(path)
    given = dict(np.load(coordinator / "init.npz"))
    mask, init = b.mask(), b.initial_params()
    k = round(0.6 * N_WEIGHTS)
    assert int((_weights(mask) == 0).sum()) == k
    # global magnitude: the k smallest |w| of both weight matrices together are the pruned
    order = np.argsort(np.abs(_weights(given)), kind="stable")
    want = np.ones(N_WEIGHTS, np.float32)
    want[order[:k]] = 0.0
    assert np.array_equal(_weights(mask), want)
    for name in ("fc1_bias", "fc2_bias"):  # biases never pruned, carried exactly
        assert mask[name].all() and np.array_equal(init[name], given[name])
    for name in WEIGHTS:
        assert np.all(init[name][mask[name] == 0] == 0.0)  # pruned initial weights are 0
        assert np.array_equal(init[name][mask[name] == 1], given[name][mask[name] == 1])
    n_params = N_WEIGHTS + HIDDEN + 1
    assert printed.splitlines() == [
        f"bundle written to {path}: mlp over {K} sites, {n_params} parameters, "
        f"{n_params - k} unpruned, weight matrices {k / N_WEIGHTS:.2%} pruned (target 60.00%)"]


def test_cli_pruned_bundle_trains_with_pruned_weights_exactly_zero(
        pruned: tuple[Path, str]) -> None:
    from genofed.agent.trainer import StepTrainer

    b = load_bundle(pruned[0])
    keep, layout = b.layout.keep, b.layout
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, K)).astype(np.float32)
    y = (x[:, :5].sum(1) > 0).astype(np.float32)
    for optimizer in ("sgd", "adam"):
        t = StepTrainer(b, optimizer=optimizer)
        t.set_params({k: v + 0.05 for k, v in b.initial_params().items()})  # zeroes pruned
        t.train(x, y, steps=25, batch_size=16, lr=0.05, rng=np.random.default_rng(0))
        w = layout.flatten(t.params)
        assert np.all(w[~keep] == 0.0)
        start = layout.flatten(b.initial_params()) + 0.05
        assert np.count_nonzero(w[keep]) == keep.sum() and np.any(w[keep] != start[keep])


@pytest.fixture(scope="module")
def aggregator_config(coordinator: Path, pruned: tuple[Path, str]) -> tuple[Path, np.ndarray]:
    """An aggregator state serving the pruned bundle: model 0 its init, model 1 a "trained"
    global model whose weights moved everywhere, pruned coordinates included."""
    from genofed.aggregator.store import Store

    b = load_bundle(pruned[0])
    v0 = b.layout.flatten(b.initial_params())
    v1 = np.random.default_rng(4).normal(size=v0.size).astype(np.float32)
    store = Store(coordinator / "agg" / "aggregator.db")
    store.put_model(0, v0)
    store.put_model(1, v1)
    store.close()
    cfg = coordinator / "agg.toml"
    cfg.write_text(f'federation = "fed"\nbundle = "{pruned[0]}"\n'
                   f'state_dir = "{coordinator / "agg"}"\n')
    return cfg, v1


def test_cli_aggregator_model_writes_stored_versions_by_name(
        aggregator_config: tuple[Path, np.ndarray], pruned: tuple[Path, str],
        tmp_path: Path) -> None:
    cfg, v1 = aggregator_config
    b = load_bundle(pruned[0])
    done = run_genofed("aggregator", "model", "--config", str(cfg), "-o", str(tmp_path / "g.npz"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("model version 1 (mlp, 337 parameters)")
    got = dict(np.load(tmp_path / "g.npz"))
    assert list(got) == [p.name for p in b.params]
    assert np.array_equal(b.layout.flatten(got), v1)
    done = run_genofed("aggregator", "model", "--config", str(cfg), "--version", "0", "-o",
                       str(tmp_path / "g0.npz"))
    assert done.returncode == 0, done.stderr
    assert np.array_equal(b.layout.flatten(dict(np.load(tmp_path / "g0.npz"))),
                          b.layout.flatten(b.initial_params()))
    bad = run_genofed("aggregator", "model", "--config", str(cfg), "--version", "5", "-o",
                      str(tmp_path / "g5.npz"))
    assert bad.returncode == 1 and "no model version 5" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1 and not (tmp_path / "g5.npz").exists()
    fresh = tmp_path / "fresh.toml"
    fresh.write_text(cfg.read_text().replace(str(cfg.parent / "agg"), str(tmp_path / "none")))
    bad = run_genofed("aggregator", "model", "--config", str(fresh), "-o", str(tmp_path / "x"))
    assert bad.returncode == 1 and "no aggregator state" in bad.stderr
    assert not (tmp_path / "none").exists()  # read-only: no empty database made


def test_cli_re_export_on_the_schedule_keeps_pruned_weights_pruned(
        coordinator: Path, pruned: tuple[Path, str],
        aggregator_config: tuple[Path, np.ndarray], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The coordinator's re-export at step 5 of 10 towards 90%: the global model out of the
    # aggregator, the earlier bundle's mask kept.
    cfg, v1 = aggregator_config
    glob = tmp_path / "global.npz"
    assert _genofed(capsys, "aggregator", "model", "--config", str(cfg), "-o",
                    str(glob))[0] == 0
    earlier = load_bundle(pruned[0])
    assert np.array_equal(earlier.layout.flatten(dict(np.load(glob))), v1)
    out = tmp_path / "again"
    printed = _export(coordinator, out, "--init", str(glob), "--mask-from", str(pruned[0]),
                      "--prune", "0.9", "--prune-step", "5", "--prune-steps", "10")
    target = 0.9 * (1 - (1 - 5 / 10) ** 3)  # Zhu and Gupta 2017 from 0: 78.75%
    assert printed.rstrip().endswith(f"(target {target:.2%}, step 5 of 10)")
    b = load_bundle(out)
    mask, init = b.mask(), b.initial_params()
    assert int((_weights(mask) == 0).sum()) == round(target * N_WEIGHTS)
    was = _weights(earlier.mask()) == 0
    assert np.all(_weights(mask)[was] == 0)  # once pruned, stays pruned
    assert np.all(_weights(init)[was] == 0)  # though the global model had moved them
    # the newly pruned are the smallest |w| of the global model among the earlier unpruned
    g = np.abs(_weights(dict(np.load(glob))))
    newly = (_weights(mask) == 0) & ~was
    assert g[newly].max() <= g[~was & ~newly].min()


@pytest.mark.parametrize(("step", "steps", "expect"), [(0, 10, 0.0), (5, 10, 0.7),
                                                        (10, 10, 0.8), (40, 10, 0.8)])
def test_the_schedule_a_re_export_prunes_to(step: int, steps: int, expect: float) -> None:
    from genofed.export.request import ExportRequest

    r = ExportRequest("mlp", Path("p"), Path("o"), prune=0.8, prune_step=step,
                      prune_steps=steps)
    s_t = 0.8 + (0.0 - 0.8) * (1 - min(step, steps) / steps) ** 3  # initial sparsity 0
    assert r.sparsity == pytest.approx(s_t) and r.sparsity == pytest.approx(expect)


def test_cli_structured_keeps_the_most_important_sites_in_panel_order(
        coordinator: Path, pruned: tuple[Path, str], tmp_path: Path) -> None:
    from genofed.models.panel import load_panel

    out = tmp_path / "small"
    printed = _export(coordinator, out, "--init", str(coordinator / "init.npz"),
                      "--mask-from", str(pruned[0]), "--keep-sites", "15",
                      "--keep-hidden", "5")
    b = load_bundle(out)
    given, earlier = dict(np.load(coordinator / "init.npz")), load_bundle(pruned[0]).mask()
    w1, w2 = given["fc1_weight"] * earlier["fc1_weight"], given["fc2_weight"] * earlier[
        "fc2_weight"]
    sites = np.sort(np.argsort(-np.sqrt((w1 ** 2).sum(0)))[:15])
    units = np.sort(np.argsort(-np.sqrt((w1[:, sites] ** 2).sum(1)) * np.abs(w2[0]))[:5])
    full = load_panel(coordinator / "panel.tsv")
    assert b.n_sites == 15 and b.model_config["hidden"] == 5
    assert [s.id for s in b.panel().sites] == [full.sites[i].id for i in sites]
    assert np.array_equal(b.mask()["fc1_weight"], earlier["fc1_weight"][np.ix_(units, sites)])
    assert np.array_equal(b.initial_params()["fc1_weight"], w1[np.ix_(units, sites)])
    assert np.array_equal(b.initial_params()["fc1_bias"], given["fc1_bias"][units])
    assert f"mlp over 15 sites, {15 * 5 + 5 + 5 + 1} parameters" in printed


@pytest.mark.parametrize(("flags", "names"), [
    (["--prune", "1.5"], "--prune must be a fraction in [0, 1)"),
    (["--prune-step", "2"], "--prune-step and --prune-steps go together"),
    (["--prune", "0.5", "--prune-step", "2", "--prune-steps", "0"], "--prune-steps must be"),
    (["--keep-sites", "41"], "--keep-sites must be in [1, 40]"),
    (["--keep-hidden", "9"], "--keep-hidden must be in [1, 8]"),
    (["--model", "logreg", "--keep-hidden", "2"], "--keep-hidden works for mlp"),
    (["--model", "logreg", "--prune", "0.5"], "--prune needs --init"),
    (["--init", "{panel}"], "--init {panel}: not an .npz"),
    (["--init", "{tmp}/none.npz"], "--init {tmp}/none.npz: not found"),
    (["--init", "{tmp}/text.npz"], "--init {tmp}/text.npz: array fc1_weight holds <U1"),
    (["--mask-from", "{tmp}"], "--mask-from: bundle {tmp}: manifest.json not found"),
    (["--mask-from", "{logreg}"], "--mask-from {logreg} is a bundle of logreg over another"),
    (["--hidden", "4", "--init", "{init}"], "init fc1_weight has shape [8, 40], want [4, 40]"),
])
def test_cli_bad_pruning_flags_give_one_line_and_exit_1(
        coordinator: Path, exported: Path, tmp_path: Path, flags: list[str], names: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "text.npz", fc1_weight=np.array(["a"]))
    where = {"panel": str(coordinator / "panel.tsv"), "tmp": str(tmp_path),
             "logreg": str(exported / "logreg"), "init": str(coordinator / "init.npz")}
    args = ["--model", "mlp", "--hidden", str(HIDDEN), *(f.format(**where) for f in flags)]
    status, out, err = _genofed(capsys, "export", "--panel", where["panel"], "--out",
                                str(tmp_path / "b"), *args)
    assert status == 1 and out == ""
    assert err.splitlines() == [err.strip()]
    assert names.format(**where) in err
    assert not (tmp_path / "b").exists()
