"""The device profile: stock onnxruntime, no torch, trains bundles the coordinator exported.

`make test` runs this folder in .venv-device on bundles that tests/bundles.py wrote in .venv
(GENOFED_DEVICE_BUNDLES), and compares with the losses PyTorch computed there. In the
coordinator profile the same tests run on bundles exported in-process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genofed.agent.checkpoint import load_checkpoint
from genofed.agent.offline import train_epochs
from genofed.agent.ortlib import ort
from genofed.agent.trainer import StepTrainer
from genofed.errors import GenofedError
from genofed.models.manifest import load_bundle
from genofed.models.signing import load_verify_key

pytestmark = pytest.mark.device
DEVICE = os.environ.get("GENOFED_DEVICE_PROFILE") == "1"
CASES = [f"{m}/{o}" for m in ("logreg", "mlp", "cnn") for o in ("sgd", "sgd_momentum", "adam")]
CASES += ["logreg_prox/sgd", "logreg_prox/adam"]


@pytest.mark.skipif(not DEVICE, reason="only in the device profile (make test-device)")
def test_device_profile_has_stock_onnxruntime_and_no_torch() -> None:
    assert importlib.util.find_spec("torch") is None
    assert importlib.util.find_spec("onnxruntime.training") is None  # stock build
    major, minor = (int(v) for v in ort.__version__.split(".")[:2])
    assert (major, minor) >= (1, 20)  # newer than the last onnxruntime-training release


@pytest.mark.parametrize("case", CASES)
def test_step_graph_follows_torch_losses_from_the_coordinator(exported: Path,
                                                              case: str) -> None:
    name, opt = case.split("/")
    ref = json.loads((exported / "reference.json").read_text())
    d = np.load(exported / "data.npz")
    b = load_bundle(exported / name, trust=load_verify_key(exported / "coordinator.pub"))
    t = StepTrainer(b, optimizer=opt, mu=ref["mu"] if name.endswith("_prox") else 0.0,
                    threads=2)
    got = np.array(t.train(d["x"], d["y"], steps=ref["steps"], batch_size=ref["batch"],
                           lr=ref["lr"][opt], rng=np.random.default_rng(ref["seed"])))
    want = np.array(ref["losses"][case])
    assert np.max(np.abs(got - want) / want) <= 1e-4
    final = np.load(exported / f"reference_{name}_{opt}.npz")
    for k in final.files:
        scale = max(float(np.abs(final[k]).max()), 1e-12)
        assert float(np.abs(t.params[k] - final[k]).max()) / scale <= 1e-3, k
    keep = b.layout.keep
    w = b.layout.flatten(t.params)
    assert np.all(w[~keep] == 0.0)
    update = b.layout.trained(w - b.layout.flatten(b.initial_params()))
    assert update.size == b.layout.n_trained < b.n_params


def test_tampered_bundle_is_refused_on_the_device(exported: Path, tmp_path: Path) -> None:
    b = Path(shutil.copytree(exported / "mlp", tmp_path / "mlp"))
    key = load_verify_key(exported / "coordinator.pub")
    data = bytearray((b / "init.npz").read_bytes())
    data[-20] ^= 0xFF
    (b / "init.npz").write_bytes(bytes(data))
    with pytest.raises(GenofedError, match=r"init\.npz has sha256"):
        load_bundle(b, trust=key)
    (b / "manifest.sig").write_bytes(bytes(64))
    with pytest.raises(GenofedError, match="does not verify"):
        load_bundle(b, trust=key)


def test_checkpoint_resume_ends_where_an_uninterrupted_run_ends(exported: Path,
                                                                tmp_path: Path) -> None:
    b = load_bundle(exported / "mlp")
    d = np.load(exported / "data.npz")
    straight = StepTrainer(b, optimizer="adam")
    want = train_epochs(straight, d["x"], d["y"], epochs=3, batch_size=32, lr=0.01, seed=5)
    ck = tmp_path / "run.ckpt"
    first = StepTrainer(b, optimizer="adam")
    train_epochs(first, d["x"], d["y"], epochs=2, batch_size=32, lr=0.01, seed=5,
                 checkpoint=ck)
    assert load_checkpoint(ck, b).epoch == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: no temp
    resumed = StepTrainer(b, optimizer="adam")  # a new process, in effect
    got = train_epochs(resumed, d["x"], d["y"], epochs=3, batch_size=32, lr=0.01, seed=5,
                       checkpoint=ck)
    assert got == want
    for k, v in straight.params.items():
        assert np.array_equal(resumed.params[k], v)
    state = resumed.state_dict()
    state["exp_avg_fc1_weight"] = state["exp_avg_fc1_weight"][:, :-1]
    with pytest.raises(GenofedError, match=r"checkpoint array exp_avg_fc1_weight has shape"):
        resumed.load_state_dict(state)  # refused before anything is written
    assert resumed.weights().tobytes() == straight.weights().tobytes()
    with pytest.raises(GenofedError, match="optimizer adam"):
        train_epochs(StepTrainer(b, optimizer="sgd"), d["x"], d["y"], epochs=4, batch_size=32,
                     lr=0.01, seed=5, checkpoint=ck)
    with pytest.raises(GenofedError, match="another bundle"):
        load_checkpoint(ck, load_bundle(exported / "cnn"))


def test_int8_inference_model_runs_on_the_device(exported: Path) -> None:
    b = load_bundle(exported / "logreg")
    assert b.int8 is not None
    from genofed.agent.int8score import int8_feeds, logit_bound
    from genofed.agent.trainer import StepTrainer

    # standardized at the panel's own frequencies: the INT8 input's range
    x = np.load(b.file("reference.npz"))["dosage"]
    x = ((x - 2 * b.panel().af) / np.sqrt(2 * b.panel().af * (1 - b.panel().af))).astype(
        np.float32)
    t = StepTrainer(b)
    w = np.random.default_rng(8).normal(0, 0.3, b.layout.n_params).astype(np.float32)
    t.set_weights(w)
    sess = ort.InferenceSession(str(b.file(b.int8.file)), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"x": x, **int8_feeds(b, t.weights())})
    assert logits.shape == (len(x),) and np.isfinite(logits).all()
    exact = t.predict_logits(x)
    bound = logit_bound(b, t.weights(), x)
    assert bound is not None and np.all(np.abs(logits - exact) <= bound)


def test_genofed_train_runs_offline_and_resumes(exported: Path, tmp_path: Path) -> None:
    from genofed.agent.vcf import Dosages, save_npz

    b = load_bundle(exported / "logreg")
    panel = b.panel()
    rng = np.random.default_rng(0)
    n = 60
    dosage = rng.binomial(2, panel.af, size=(n, len(panel))).astype(np.float32)
    dosage[0, 0] = np.nan
    samples = tuple(f"s{i}" for i in range(n))
    save_npz(tmp_path / "x.npz", Dosages(dosage=dosage, samples=samples,
                                          site_ids=tuple(panel.ids)))
    (tmp_path / "y.tsv").write_text("sample\tphenotype\n" + "".join(
        f"s{i}\t{int(dosage[i, 1] > 0)}\n" for i in range(0, n, 2)))
    args = [sys.executable, "-m", "genofed", "train", "--bundle", str(exported / "logreg"),
            "--features", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.tsv"),
            "--trust", str(exported / "coordinator.pub"), "--optimizer", "adam", "--lr", "0.05",
            "--batch-size", "8", "--threads", "2", "--checkpoint", str(tmp_path / "c.ckpt"),
            "--out", str(tmp_path / "params.npz")]
    r = subprocess.run([*args, "--epochs", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "30 samples, 8 steps (step, adam)" in r.stdout
    r = subprocess.run([*args, "--epochs", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "12 steps" in r.stdout, r.stderr
    with np.load(tmp_path / "params.npz") as z:
        assert set(z.files) == {"linear_weight", "linear_bias"}
    bad = subprocess.run([*args[:-2], "--features", str(tmp_path / "y.tsv")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "y.tsv" in bad.stderr


def test_trainer_process_does_not_import_torch(exported: Path) -> None:
    code = ("import sys, numpy as np\n"
            "from genofed.agent.trainer import StepTrainer\n"
            "from genofed.models.manifest import load_bundle\n"
            f"t = StepTrainer(load_bundle({str(exported / 'cnn')!r}), optimizer='adam')\n"
            f"d = np.load({str(exported / 'data.npz')!r})\n"
            "t.train(d['x'], d['y'], steps=3, batch_size=32, lr=0.01, "
            "rng=np.random.default_rng(0))\n"
            "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_step_writes_weights_in_place_through_io_binding(exported: Path) -> None:
    b = load_bundle(exported / "mlp")
    t = StepTrainer(b, optimizer="adam")
    d = np.load(exported / "data.npz")
    addresses = {(i, k): a.ctypes.data for i, bufs in enumerate(t._bufs) for k, a in bufs.items()}
    before = t.params
    t.train(d["x"], d["y"], steps=5, batch_size=32, lr=0.01, rng=np.random.default_rng(0))
    after = t.params
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    # the same two preallocated buffer sets hold the weights and state after every step
    assert {(i, k): a.ctypes.data for i, bufs in enumerate(t._bufs)
            for k, a in bufs.items()} == addresses
    assert np.array_equal(t._bufs[t._cur]["fc1_weight"], after["fc1_weight"])
    # new weights (a round's) are written into those buffers too: nothing is bound anew
    bindings = list(t._bindings)
    t.set_weights(b.layout.flatten(before))
    assert t._bindings == bindings and t._cur == 0
    assert {(i, k): a.ctypes.data for i, bufs in enumerate(t._bufs)
            for k, a in bufs.items()} == addresses
    assert all(np.array_equal(t.params[k], v) for k, v in before.items())
