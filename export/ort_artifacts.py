"""onnxruntime-training artifacts (`generate_artifacts`) for a bundle, where that package exists.

The base model is the masked forward pass `(x, params..., masks...) -> logits` with the
parameters and masks moved into initializers: the parameters require gradients, the masks are
frozen. Because the forward pass sees weight * mask, a pruned weight gets a zero gradient, and
SGD and Adam (weight decay 0) leave it at exactly 0. The loss is BCE with logits, mean over the
batch; the optimizers are ORT's SGD and AdamW with weight decay 0 (= Adam). ORT's training API
has no SGD with momentum.

`onnxruntime.training` is the package `onnxruntime-training-cpu` (x86_64, Python <= 3.12, last
release 1.19.2); with stock onnxruntime, asking for these artifacts is a one-line error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from genofed.errors import LocalInputError
from genofed.export.stepgraph import IR_VERSION, OPSET, export_masked_forward, param_specs
from genofed.models.manifest import DEFAULT_HYPER, OrtArtifacts

log = logging.getLogger(__name__)

PREFIX = "ort_"
ORT_OPTIMIZERS = ("sgd", "adam")


def ort_training_available() -> bool:
    """Whether onnxruntime-training (its artifacts module) is installed here."""
    try:
        return importlib.util.find_spec("onnxruntime.training.artifacts") is not None
    except ModuleNotFoundError:
        return False


def export_ort_training(module: nn.Module, n_sites: int, params: Mapping[str, np.ndarray],
                        mask: Mapping[str, np.ndarray], out: Path) -> OrtArtifacts:
    """Write ort_training.onnx, ort_eval.onnx, ort_checkpoint and one optimizer model each."""
    if not ort_training_available():
        raise LocalInputError("export: onnxruntime-training is not installed here (the coordinator "
                              "profile has it on x86_64); export with ort_training=False")
    from onnxruntime.training import artifacts, onnxblock
    specs = param_specs(module)
    hyper = DEFAULT_HYPER["adam"]
    optimizers = {
        "sgd": onnxblock.optim.SGD(),
        "adam": onnxblock.optim.AdamW(betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"],
                                      weight_decay=0.0),
    }
    with tempfile.TemporaryDirectory(prefix="genofed-ort-") as tmp:
        t = Path(tmp)
        export_masked_forward(module, n_sites, t / "base.onnx")
        base = onnx.load(str(t / "base.onnx"))
        values = {s.name: params[s.name] for s in specs}
        values |= {f"mask_{s.name}": mask[s.name] for s in specs}
        _inputs_to_initializers(base, values)
        files: dict[str, str] = {}
        for opt, block in optimizers.items():
            d = t / opt
            d.mkdir()
            with _quiet_stderr():
                artifacts.generate_artifacts(
                    base, requires_grad=[s.name for s in specs],
                    frozen_params=[f"mask_{s.name}" for s in specs],
                    loss=_stable_bce(onnxblock), optimizer=block,
                    artifact_directory=d, prefix=PREFIX)
            files[opt] = f"{PREFIX}optimizer_{opt}.onnx"
            _save_pinned(d / f"{PREFIX}optimizer_model.onnx", out / files[opt])
        d = t / ORT_OPTIMIZERS[0]
        _save_pinned(d / f"{PREFIX}training_model.onnx", out / f"{PREFIX}training.onnx")
        _save_pinned(d / f"{PREFIX}eval_model.onnx", out / f"{PREFIX}eval.onnx")
        shutil.copyfile(d / f"{PREFIX}checkpoint", out / f"{PREFIX}checkpoint")
    log.info("onnxruntime-training artifacts written (optimizers %s)", ", ".join(files))
    return OrtArtifacts(training_model=f"{PREFIX}training.onnx", eval_model=f"{PREFIX}eval.onnx",
                        checkpoint=f"{PREFIX}checkpoint", optimizers=files,
                        hyper={"adam": dict(hyper), "sgd": {}})


def _stable_bce(onnxblock: Any) -> Any:
    """Mean BCE with logits, stably: (z + |z|) / 2 - z y + log(1 + exp(-|z|)).

    onnxblock's own BCEWithLogitsLoss takes log(sigmoid(z)) and log(1 - sigmoid(z)); ORT's
    sigmoid reaches exactly 0 or 1 for |z| above about 17, the log is -inf, and training went
    NaN where the step graph did not. Writing max(z, 0) as (z + |z|) / 2 matters: with
    Relu(z), ORT's gradient rules give 0 at z = 0 (Relu' = 0, Abs' = sign(0) = 0) instead of
    sigmoid(0) - y, and a zero-initialized logistic regression starts at z = 0. (Softplus has
    no gradient rule in ORT 1.19.)
    """
    from onnx import TensorProto, helper

    class StableBCE(onnxblock.Block):
        def build(self, logits: str, target: str = "target") -> str:
            g = self.base.graph
            if target not in {i.name for i in g.input}:
                spec = next(o for o in g.output if o.name == logits)
                t = onnx.ValueInfoProto()
                t.CopyFrom(spec)
                t.name = target
                g.input.append(t)
            one, half, a, za, relu, na, e, p, lg, zy, d, per, loss = (
                f"genofed_bce_{i}" for i in range(13))
            g.initializer.extend([helper.make_tensor(one, TensorProto.FLOAT, [], [1.0]),
                                  helper.make_tensor(half, TensorProto.FLOAT, [], [0.5])])
            g.node.extend([
                helper.make_node("Abs", [logits], [a]),
                helper.make_node("Add", [logits, a], [za]),
                helper.make_node("Mul", [half, za], [relu]),
                helper.make_node("Neg", [a], [na]),
                helper.make_node("Exp", [na], [e]),
                helper.make_node("Add", [one, e], [p]),
                helper.make_node("Log", [p], [lg]),
                helper.make_node("Mul", [logits, target], [zy]),
                helper.make_node("Sub", [relu, zy], [d]),
                helper.make_node("Add", [d, lg], [per]),
                helper.make_node("ReduceMean", [per], [loss], keepdims=0),
            ])
            return loss

    return StableBCE()


def _save_pinned(src: Path, dst: Path) -> None:
    """Copy an ONNX model, lowering its IR version to what onnxruntime 1.19 reads (onnxblock
    writes the installed onnx package's newest IR), with AdamW in PyTorch's mode.

    onnxblock's AdamW sets adam_mode 1 (Hugging Face: eps added to sqrt(v) before the bias
    correction), which differs from torch.optim.Adam wherever gradients are tiny; mode 0 is
    torch's AdamW, and with weight decay 0 that is torch's Adam.
    """
    model = onnx.load(str(src))
    model.ir_version = min(model.ir_version, IR_VERSION)
    for node in model.graph.node:
        if node.op_type == "AdamWOptimizer":
            for attr in node.attribute:
                if attr.name == "adam_mode":
                    attr.i = 0
    onnx.save_model(model, str(dst))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hold back what native code writes to fd 2 (generate_artifacts' graph transformers log
    every pass at info level); replay it through logging at debug level."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            log.debug("generate_artifacts said:\n%s", buf.read().decode(errors="replace"))


def _inputs_to_initializers(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> None:
    """Turn the named graph inputs into initializers holding these values."""
    keep = [i for i in model.graph.input if i.name not in values]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for name, a in values.items():
        model.graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(a, dtype=np.float32), name))
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = OPSET
