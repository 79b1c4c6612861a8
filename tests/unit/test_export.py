"""Bundle export: graph numerics against torch and numpy, manifest integrity, overwriting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from genofed.errors import GenofedError  # noqa: E402
from genofed.export import stepgraph  # noqa: E402
from genofed.export.bundle import export_bundle  # noqa: E402
from genofed.models.manifest import (  # noqa: E402
    FORMAT,
    load_bundle,
    sha256_file,
)
from genofed.models.panel import Panel, Site, load_panel  # noqa: E402
from genofed.models.zoo import MODEL_NAMES, build_model  # noqa: E402

K = 20
HIDDEN = 8


def write_panel(path: Path, n_sites: int, seed: int = 0) -> Path:
    """A tiny valid panel TSV."""
    rng = np.random.default_rng(seed)
    sites = tuple(Site(chrom="chr1", pos=1000 + 10 * i, ref="A", alt="G", id=f"rs{i}",
                       af=round(float(rng.uniform(0.05, 0.95)), 4)) for i in range(n_sites))
    path.write_text(Panel(build="GRCh38", sites=sites).to_tsv())
    return path


@pytest.fixture(scope="module")
def panel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_panel(tmp_path_factory.mktemp("panel") / "panel.tsv", K)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, panel_path: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {m: export_bundle(m, panel_path, root / m, hidden=HIDDEN, optimizers=("sgd",),
                             ort_training=False) for m in MODEL_NAMES}


def _session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_build_model_is_deterministic() -> None:
    a, b = build_model("mlp", K, hidden=HIDDEN, seed=3), build_model("mlp", K, hidden=HIDDEN,
                                                                     seed=3)
    c = build_model("mlp", K, hidden=HIDDEN, seed=4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert pa.dtype == torch.float32
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    assert all(not p.any() for p in build_model("logreg", K).parameters())
    x = torch.zeros(5, K)
    assert a(x).shape == (5,)
    with pytest.raises(GenofedError, match="unknown model"):
        build_model("resnet", K)


def test_manifest_schema(bundles: dict[str, Path], panel_path: Path) -> None:
    b = load_bundle(bundles["mlp"])
    raw = json.loads((bundles["mlp"] / "manifest.json").read_text())
    assert raw["format"] == FORMAT
    assert raw["model"] == "mlp" and raw["model_config"] == {"hidden": HIDDEN, "seed": 0}
    assert raw["panel"] == {"sha256": load_panel(panel_path).sha256(), "n_sites": K,
                            "build": "GRCh38"}
    assert raw["input_encoding"] == {"kind": "standardized_dosage", "missing": "2p"}
    assert raw["loss"] == "bce_with_logits_mean"
    names = ["fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"]
    assert [p["name"] for p in raw["parameters"]] == names
    assert raw["parameters"][0]["torch_name"] == "fc1.weight"
    assert [p["shape"] for p in raw["parameters"]] == [[HIDDEN, K], [HIDDEN], [1, HIDDEN], [1]]
    assert raw["graphs"]["forward"]["inputs"] == ["x", *names]
    assert raw["graphs"]["eval"]["inputs"] == ["x", "y", *names]
    step = raw["graphs"]["steps"]["sgd"]
    assert step["inputs"] == [*names, *(f"mask_{n}" for n in names), "x", "y", "lr"]
    assert step["outputs"] == [f"new_{n}" for n in names] + ["loss"]
    assert set(raw["files"]) == {"forward.onnx", "eval.onnx", "step_sgd.onnx", "init.npz",
                                 "mask.npz", "panel.tsv"}
    for name, digest in raw["files"].items():
        assert sha256_file(bundles["mlp"] / name) == digest
    assert b.panel().sha256() == b.panel_sha256
    assert b.n_params == HIDDEN * K + HIDDEN + HIDDEN + 1
    init = b.initial_params()
    module = build_model("mlp", K, hidden=HIDDEN, seed=0)
    assert np.array_equal(init["fc1_weight"], next(module.parameters()).detach().numpy())


def test_graphs_are_loadable_by_old_onnxruntime(bundles: dict[str, Path]) -> None:
    onnx = pytest.importorskip("onnx")
    for path in bundles.values():
        for f in ("forward.onnx", "eval.onnx", "step_sgd.onnx"):
            model = onnx.load(str(path / f))
            assert model.ir_version <= 9  # the agent floor, onnxruntime 1.17, reads IR <= 9
            assert all(o.domain in ("", "ai.onnx") and o.version <= 21
                       for o in model.opset_import)
            x = next(i for i in model.graph.input if i.name == "x")
            assert x.type.tensor_type.shape.dim[0].dim_param  # dynamic batch


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_step_gradient_is_the_analytic_logreg_gradient(bundles: dict[str, Path],
                                                       batch: int) -> None:
    # Would catch the known failure: gradients multiplied (or divided) by the batch size.
    b = load_bundle(bundles["logreg"])
    rng = np.random.default_rng(batch)
    w = rng.normal(0, 0.3, size=(1, K)).astype(np.float32)
    bias = np.array([0.2], np.float32)
    x = rng.normal(size=(batch, K)).astype(np.float32)
    y = (rng.random(batch) < 0.5).astype(np.float32)
    lr = 0.5
    out = _session(b.file("step_sgd.onnx")).run(None, {
        "linear_weight": w, "linear_bias": bias, "mask_linear_weight": np.ones_like(w),
        "mask_linear_bias": np.ones_like(bias), "x": x, "y": y, "lr": np.array(lr, np.float32)})
    new_w, new_b, loss = out
    x64, z = x.astype(np.float64), x.astype(np.float64) @ w[0] + bias[0]
    resid = _sigmoid(z) - y
    grad_w = x64.T @ resid / batch
    grad_b = resid.mean()
    want_loss = np.mean(np.logaddexp(0, z) - y * z)
    implied_w = (w[0].astype(np.float64) - new_w[0]) / lr
    implied_b = (bias[0] - float(new_b[0])) / lr
    assert np.max(np.abs(implied_w - grad_w)) <= 1e-4 * np.max(np.abs(grad_w))
    assert abs(implied_b - grad_b) <= 1e-4 * max(abs(grad_b), 1e-3)
    assert abs(float(loss) - want_loss) <= 1e-5 * want_loss


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_forward_graph_matches_torch(bundles: dict[str, Path], model: str) -> None:
    b = load_bundle(bundles[model])
    module = build_model(model, K, hidden=HIDDEN, seed=1)  # random weights, fed as inputs
    params = {s.name: p.detach().numpy() for s, p in
              zip(b.params, module.parameters(), strict=True)}
    if model == "logreg":
        params = {k: np.random.default_rng(0).normal(size=v.shape).astype(np.float32)
                  for k, v in params.items()}
        with torch.no_grad():
            for spec, p in zip(b.params, module.parameters(), strict=True):
                p.copy_(torch.from_numpy(params[spec.name]))
    sess = _session(b.file("forward.onnx"))
    for batch in (1, 3, 64):
        x = np.random.default_rng(batch).normal(size=(batch, K)).astype(np.float32)
        (got,) = sess.run(None, {"x": x, **params})
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        assert got.shape == (batch,)
        assert np.max(np.abs(got - want)) <= 1e-5 * max(np.max(np.abs(want)), 1.0)


def test_self_check_rejects_batch_scaled_gradients(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    good = stepgraph.make_step_fn

    def scaled(module: Any, specs: Any, *opts: Any, **kw: Any) -> stepgraph.StepFn:
        fn = good(module, specs, *opts, **kw)

        def step(*args: Any) -> tuple[Any, ...]:
            out = fn(*args)
            batch = args[-3].shape[0]
            news = [p + (new - p) * batch for p, new in zip(args, out[:-1], strict=False)]
            return (*news, out[-1])

        return step

    monkeypatch.setattr(stepgraph, "make_step_fn", scaled)
    with pytest.raises(GenofedError, match="differs from torch eager at batch 7"):
        stepgraph.export_step(build_model("logreg", K), K, tmp_path / "bad.onnx")


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "copy"))


def test_flipped_byte_in_step_graph_is_rejected(bundles: dict[str, Path],
                                                tmp_path: Path) -> None:
    b = _copy(bundles["logreg"], tmp_path)
    data = bytearray((b / "step_sgd.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / "step_sgd.onnx").write_bytes(bytes(data))
    with pytest.raises(GenofedError, match=r"copy: step_sgd\.onnx has sha256"):
        load_bundle(b)


def test_edited_parameter_shape_is_rejected(bundles: dict[str, Path], tmp_path: Path) -> None:
    b = _copy(bundles["logreg"], tmp_path)
    raw = json.loads((b / "manifest.json").read_text())
    raw["parameters"][0]["shape"] = [1, K + 1]
    (b / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(GenofedError, match="linear_weight"):
        load_bundle(b)


@pytest.mark.parametrize("damage", ["missing_file", "bad_json", "missing_key", "bad_format"])
def test_damaged_bundle_is_rejected(bundles: dict[str, Path], tmp_path: Path,
                                    damage: str) -> None:
    b = _copy(bundles["logreg"], tmp_path)
    manifest = b / "manifest.json"
    raw = json.loads(manifest.read_text())
    if damage == "missing_file":
        (b / "init.npz").unlink()
        match = "init.npz is missing"
    elif damage == "bad_json":
        manifest.write_text(manifest.read_text()[:-10])
        match = "cannot read manifest.json"
    elif damage == "missing_key":
        del raw["graphs"]
        manifest.write_text(json.dumps(raw))
        match = "missing key 'graphs'"
    else:
        raw["format"] = "genofed-bundle/99"
        manifest.write_text(json.dumps(raw))
        match = "format"
    with pytest.raises(GenofedError, match=match):
        load_bundle(b)


def test_flatten_unflatten_roundtrip(bundles: dict[str, Path]) -> None:
    b = load_bundle(bundles["mlp"])
    params = b.initial_params()
    vec = b.layout.flatten(params)
    assert vec.dtype == np.float32 and vec.shape == (b.n_params,)
    back = b.layout.unflatten(vec)
    assert list(back) == [p.name for p in b.params]
    for name, a in params.items():
        assert np.array_equal(back[name], a)
    with pytest.raises(GenofedError, match=rf"want \[{b.n_params}\]"):
        b.layout.unflatten(vec[:-1])
    with pytest.raises(GenofedError, match="missing"):
        b.layout.flatten({"fc1_weight": params["fc1_weight"]})


def test_export_overwrite_rules(bundles: dict[str, Path], panel_path: Path,
                                tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("keep me\n")
    with pytest.raises(GenofedError, match="not a bundle"):
        export_bundle("logreg", panel_path, junk)
    assert (junk / "notes.txt").read_text() == "keep me\n"
    # Re-exporting over an existing bundle replaces it, byte for byte the same.
    again = _copy(bundles["logreg"], tmp_path)
    (again / "init.npz").write_bytes(b"stale")
    export_bundle("logreg", panel_path, again, optimizers=("sgd",), ort_training=False)
    want = json.loads((bundles["logreg"] / "manifest.json").read_text())["files"]
    assert load_bundle(again).files == want
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_from_weights_with_saturated_logits(panel_path: Path, tmp_path: Path) -> None:
    # Trained weights can push |logit| past 17, where the mean BCE is ~1e-10 and float32 in
    # onnxruntime rounds it differently from torch: the graphs' self-checks must not see them.
    module = build_model("mlp", K, hidden=HIDDEN)
    rng = np.random.default_rng(5)
    init = {name: (rng.normal(size=p.shape) * 3.0).astype(np.float32) for name, p in
            zip(("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"), module.parameters(),
                strict=True)}
    b = load_bundle(export_bundle("mlp", panel_path, tmp_path / "b", hidden=HIDDEN, init=init,
                                  optimizers=("sgd",), ort_training=False))
    for name, a in b.initial_params().items():
        assert np.array_equal(a, init[name])
