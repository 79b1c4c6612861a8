"""The model bundle: what the coordinator exports and every device trains (numpy only, no torch).

A bundle is a directory:

    manifest.json        the schema below
    manifest.sig         Ed25519 signature of manifest.json's bytes (genofed.models.signing)
    forward.onnx         (x, params...) -> logits
    eval.onnx            (x, y, params...) -> (loss, logits)
    step_<opt>.onnx      one whole training step per optimizer (sgd, sgd_momentum, adam)
    dpsgd_<opt>.onnx     optional: the DP-SGD step of an optimizer (genofed.export.dpsgd)
    init.npz, mask.npz   initial parameters and the pruning mask (0/1), keyed by ONNX name
    panel.tsv            the panel's canonical TSV (genofed.models.panel)
    forward_int8.onnx    optional: INT8 inference model (x, <name>_int8, <name>_scale...) ->
                         logits: the weights as the model travels (genofed.export.quantize)
    reference.npz        optional: the coordinator's reference genotypes (`dosage` [n, K],
                         NaN missing; `ancestry` [n]), which `genofed agent predict` scores
                         with the current model to place its owner's score
    ort_*                optional: onnxruntime-training artifacts (training, eval, optimizer
                         models and checkpoint)

manifest.json:

    {
      "format": "genofed-bundle/2",
      "model": "logreg" | "mlp" | "cnn",
      "model_config": {...},                               # what rebuilds the torch module
      "panel": {"sha256": <Panel.sha256()>, "n_sites": K, "build": "GRCh38"},
      "input_encoding": {"kind": "standardized_dosage", "missing": "2p"},
      "loss": "bce_with_logits_mean",
      "proximal": false,                                   # FedProx term in the step graphs
      "parameters": [{"name": "linear_weight", "torch_name": "linear.weight",
                      "shape": [1, K], "dtype": "float32"}, ...],      # graph order
      "graphs": {
        "forward": {"file": "forward.onnx", "inputs": ["x", <names>...], "outputs": ["logits"]},
        "eval": {"file": "eval.onnx", "inputs": ["x", "y", <names>...],
                 "outputs": ["loss", "logits"]},
        "steps": {"adam": {"file": "step_adam.onnx", "optimizer": "adam",
                           "hyper": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                           "inputs": [...], "outputs": [...]}, ...},
        "forward_int8": {"file": "forward_int8.onnx", "inputs": ["x", "<name>_int8",
                         "<name>_scale", ...], "outputs": ["logits"]},
        "dpsgd": {"sgd": {"file": "dpsgd_sgd.onnx", "optimizer": "sgd", ...}, ...}  # optional
      },
      "ort_training": {"training_model": ..., "eval_model": ..., "checkpoint": ...,
                       "optimizers": {"sgd": ..., "adam": ...}, "hyper": {"adam": {...}}},
      "init": "init.npz", "mask": "mask.npz", "reference": "reference.npz",  # optional
      "files": {<file name>: <sha256 hex>, ...}            # every file but manifest.*
    }

A step graph's inputs are, in order: the parameters; the optimizer state (sgd: none;
sgd_momentum: buf_<name> per parameter; adam: exp_avg_<name>, exp_avg_sq_<name> per
parameter, then the scalar step count `step`); mask_<name> per parameter; with "proximal",
anchor_<name> per parameter and the scalar `mu`; then x float32 [B, K], y float32 [B] and the
scalar lr. Its outputs are "new_" + each parameter and state name, then the scalar loss (the
mean BCE, without the proximal term). B is dynamic. The gradient is masked, so a pruned
coordinate (mask 0) given as 0 with zero optimizer state comes out of every step the same.

A DP-SGD step graph (`dpsgd_step_graph_names`) takes the plain step's inputs without the
proximal ones, with noise_<name> per parameter (standard normals, shaped like it) after the
masks, and the scalars clip, noise_multiplier and expected_batch after lr; a model of one
linear layer with one output (logistic regression, `feeds_input_norm`) also takes x_sqnorm
float32 [B], each example's squared norm of x under the weight's mask (see
genofed.export.dpsgd); its outputs are the plain step's.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genofed.errors import LocalInputError
from genofed.models.layout import ParamLayout
from genofed.models.panel import Panel, load_panel

if TYPE_CHECKING:
    from nacl.signing import VerifyKey

FORMAT = "genofed-bundle/2"
MANIFEST = "manifest.json"
STEP_EXTRA_INPUTS = ("x", "y", "lr")
DPSGD_EXTRA_INPUTS = ("clip", "noise_multiplier", "expected_batch")
INPUT_NORM = "x_sqnorm"  # a logistic regression's DP step: sum_j mask_j x_ij^2 per example
OPTIMIZERS = ("sgd", "sgd_momentum", "adam")
DEFAULT_HYPER: Mapping[str, Mapping[str, float]] = {
    "sgd": {}, "sgd_momentum": {"momentum": 0.9},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}
_DTYPES = ("float32",)


@dataclass(frozen=True)
class ParamSpec:
    """One trainable tensor: its ONNX name, torch name, shape and dtype."""

    name: str
    torch_name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle and its input and output names, in order."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    optimizer: str | None = None
    hyper: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OrtArtifacts:
    """The onnxruntime-training artifacts of a bundle (file names inside it)."""

    training_model: str
    eval_model: str
    checkpoint: str
    optimizers: Mapping[str, str]
    hyper: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, hash-verified bundle."""

    path: Path
    model: str
    model_config: Mapping[str, Any]
    panel_sha256: str
    n_sites: int
    build: str
    input_encoding: Mapping[str, Any]
    loss: str
    params: tuple[ParamSpec, ...]
    forward: GraphSpec
    eval: GraphSpec
    steps: Mapping[str, GraphSpec]
    proximal: bool
    init: str
    mask_file: str
    files: Mapping[str, str]
    int8: GraphSpec | None = None
    ort: OrtArtifacts | None = None
    signed_by: str | None = None  # hex verify key that checked manifest.sig, if one did
    dpsgd: Mapping[str, GraphSpec] = field(default_factory=dict)  # DP-SGD steps by optimizer
    reference: str | None = None  # reference genotypes (reference.npz), if shipped

    def file(self, name: str) -> Path:
        """Absolute path of a file of the bundle."""
        return self.path / name

    @property
    def step(self) -> GraphSpec:
        """The default step graph: plain SGD if exported, else the first one."""
        return self.steps.get("sgd") or next(iter(self.steps.values()))

    @property
    def n_params(self) -> int:
        """Total number of trainable scalars."""
        return sum(p.size for p in self.params)

    def initial_params(self) -> dict[str, np.ndarray]:
        """The initial parameters from init.npz, checked against the specs."""
        return read_arrays(self.path, self.init, self.params)

    def mask(self) -> dict[str, np.ndarray]:
        """The pruning mask (float32, 1 = trained, 0 = pruned), checked against the specs."""
        return read_arrays(self.path, self.mask_file, self.params)

    @cached_property
    def layout(self) -> ParamLayout:
        """The flat layout of the parameters under the pruning mask (mask.npz, read once)."""
        try:
            return ParamLayout.of(self.params, self.mask())
        except LocalInputError as exc:
            raise LocalInputError(f"bundle {self.path}: {self.mask_file}: {exc}") from None

    def panel(self) -> Panel:
        """The bundle's panel, checked against the manifest."""
        panel = load_panel(self.file("panel.tsv"))
        if panel.sha256() != self.panel_sha256 or len(panel) != self.n_sites:
            raise LocalInputError(f"{self.path}: panel.tsv does not match the manifest's panel")
        return panel


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_name(torch_name: str) -> str:
    """The graph input name of a torch parameter: dots become underscores."""
    name = torch_name.replace(".", "_")
    if not name.isidentifier():
        raise LocalInputError(f"parameter name {torch_name!r} does not map to an identifier")
    return name


def state_names(specs: Sequence[ParamSpec], optimizer: str) -> tuple[str, ...]:
    """Names of an optimizer's state tensors, in graph order."""
    names = [p.name for p in specs]
    if optimizer == "sgd":
        return ()
    if optimizer == "sgd_momentum":
        return tuple(f"buf_{n}" for n in names)
    if optimizer == "adam":
        return (*(f"exp_avg_{n}" for n in names), *(f"exp_avg_sq_{n}" for n in names), "step")
    raise LocalInputError(f"unknown optimizer {optimizer!r} (want one of {', '.join(OPTIMIZERS)})")


def initial_state(specs: Sequence[ParamSpec], optimizer: str) -> dict[str, np.ndarray]:
    """An optimizer's state before its first step: all zeros, in graph order."""
    names = state_names(specs, optimizer)
    shapes = [p.shape for p in specs] * 2 + [()]
    return {n: np.zeros(shape, np.float32) for n, shape in zip(names, shapes, strict=False)}


def step_graph_names(specs: Sequence[ParamSpec], optimizer: str = "sgd", *,
                     proximal: bool = False) -> GraphSpec:
    """Input and output names of the step graph of one optimizer."""
    names = tuple(p.name for p in specs)
    state = state_names(specs, optimizer)
    prox = (*(f"anchor_{n}" for n in names), "mu") if proximal else ()
    return GraphSpec(file=f"step_{optimizer}.onnx",
                     inputs=(*names, *state, *(f"mask_{n}" for n in names), *prox,
                             *STEP_EXTRA_INPUTS),
                     outputs=(*(f"new_{n}" for n in (*names, *state)), "loss"),
                     optimizer=optimizer, hyper=dict(DEFAULT_HYPER[optimizer]))


def feeds_input_norm(specs: Sequence[ParamSpec]) -> bool:
    """Whether the model is one linear layer with one output (a weight [1, K] and a bias
    [1]): its DP-SGD step takes each example's masked squared input norm as an input."""
    return len(specs) == 2 and len(specs[0].shape) == 2 and specs[0].shape[0] == 1 \
        and specs[1].shape == (1,)


def dpsgd_step_graph_names(specs: Sequence[ParamSpec], optimizer: str = "sgd") -> GraphSpec:
    """Input and output names of the DP-SGD step graph of one optimizer."""
    plain = step_graph_names(specs, optimizer)
    names = tuple(p.name for p in specs)
    n_carried = len(names) + len(state_names(specs, optimizer))
    return GraphSpec(file=f"dpsgd_{optimizer}.onnx",
                     inputs=(*plain.inputs[:n_carried + len(names)],
                             *(f"noise_{n}" for n in names), *STEP_EXTRA_INPUTS,
                             *DPSGD_EXTRA_INPUTS,
                             *((INPUT_NORM,) if feeds_input_norm(specs) else ())),
                     outputs=plain.outputs, optimizer=optimizer, hyper=plain.hyper)


def forward_graph_names(specs: Sequence[ParamSpec]) -> GraphSpec:
    """Input and output names of the forward graph for these parameters."""
    return GraphSpec(file="forward.onnx", inputs=("x", *(p.name for p in specs)),
                     outputs=("logits",))


def eval_graph_names(specs: Sequence[ParamSpec]) -> GraphSpec:
    """Input and output names of the eval graph (loss and logits) for these parameters."""
    return GraphSpec(file="eval.onnx", inputs=("x", "y", *(p.name for p in specs)),
                     outputs=("loss", "logits"))


def int8_graph_names(specs: Sequence[ParamSpec]) -> GraphSpec:
    """Input and output names of the INT8 inference model: x, then each parameter as the
    model travels (int8 values, one float32 scale per row; `export/quantize.py`)."""
    return GraphSpec(file="forward_int8.onnx",
                     inputs=("x", *(f"{p.name}_{k}" for p in specs for k in ("int8", "scale"))),
                     outputs=("logits",))


def load_bundle(path: str | Path, *, trust: VerifyKey | None = None) -> Bundle:
    """Read manifest.json, validate it and verify the sha256 of every file it lists.

    With `trust` (the coordinator's verify key), manifest.sig must be that key's signature of
    the manifest's bytes; the bytes verified are the bytes parsed.
    """
    root = Path(path)
    mpath = root / MANIFEST
    try:
        data = mpath.read_bytes()
    except FileNotFoundError:
        raise LocalInputError(f"bundle {root}: {MANIFEST} not found") from None
    except OSError as exc:
        raise LocalInputError(f"bundle {root}: cannot read {MANIFEST}: {exc}") from None
    signed_by = None
    if trust is not None:
        from genofed.models.signing import verify_manifest

        verify_manifest(root, data, trust)
        signed_by = bytes(trust).hex()
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LocalInputError(f"bundle {root}: cannot read {MANIFEST}: {exc}") from None
    try:
        bundle = _parse(root, raw, signed_by)
    except KeyError as exc:
        raise LocalInputError(f"bundle {root}: {MANIFEST}: missing key {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise LocalInputError(f"bundle {root}: {MANIFEST}: malformed: {exc}") from None
    for name, want in bundle.files.items():
        fpath = root / name
        if not fpath.is_file():
            raise LocalInputError(f"bundle {root}: {name} is missing")
        got = sha256_file(fpath)
        if got != want:
            raise LocalInputError(f"bundle {root}: {name} has sha256 {got[:16]}..., manifest "
                                  f"says {want[:16]}... (corrupt or tampered)")
    if bundle.files["panel.tsv"] != bundle.panel_sha256:
        raise LocalInputError(f"bundle {root}: panel.tsv is not the panel the manifest pins")
    bundle.initial_params()  # shapes in the manifest must match the shipped weights
    _ = bundle.layout  # reads mask.npz once: it must fit the parameters and be 0 or 1
    return bundle


def _parse(root: Path, raw: Any, signed_by: str | None) -> Bundle:
    where = f"bundle {root}: {MANIFEST}"
    if not isinstance(raw, dict):
        raise LocalInputError(f"{where}: top level must be an object")
    if raw.get("format") != FORMAT:
        raise LocalInputError(f"{where}: format is {raw.get('format')!r}, want {FORMAT!r}")
    params = tuple(_param(where, i, p) for i, p in enumerate(raw["parameters"]))
    if not params or len({p.name for p in params}) != len(params):
        raise LocalInputError(f"{where}: parameters must be a non-empty list of unique names")
    panel = raw["panel"]
    n_sites = int(panel["n_sites"])
    if n_sites < 1:
        raise LocalInputError(f"{where}: panel.n_sites must be >= 1")
    proximal = raw["proximal"]
    if not isinstance(proximal, bool):
        raise LocalInputError(f"{where}: proximal must be true or false")
    graphs = raw["graphs"]
    forward = _graph(graphs["forward"])
    evalg = _graph(graphs["eval"])
    steps = {str(k): _graph(g) for k, g in dict(graphs["steps"]).items()}
    if not steps:
        raise LocalInputError(f"{where}: graphs.steps is empty")
    checks = [("forward", forward, forward_graph_names(params)),
              ("eval", evalg, eval_graph_names(params))]
    for opt, g in steps.items():
        if opt not in OPTIMIZERS or g.optimizer != opt:
            raise LocalInputError(f"{where}: graphs.steps.{opt}: unsupported optimizer "
                                  f"{g.optimizer!r}")
        checks.append((f"steps.{opt}", g, step_graph_names(params, opt, proximal=proximal)))
    dpsgd = {str(k): _graph(g) for k, g in dict(graphs.get("dpsgd", {})).items()}
    for opt, g in dpsgd.items():
        if opt not in OPTIMIZERS or g.optimizer != opt:
            raise LocalInputError(f"{where}: graphs.dpsgd.{opt}: unsupported optimizer "
                                  f"{g.optimizer!r}")
        checks.append((f"dpsgd.{opt}", g, dpsgd_step_graph_names(params, opt)))
    int8 = _graph(graphs["forward_int8"]) if "forward_int8" in graphs else None
    if int8 is not None:
        checks.append(("forward_int8", int8, int8_graph_names(params)))
    for kind, got, want in checks:
        if (got.inputs, got.outputs) != (want.inputs, want.outputs):
            raise LocalInputError(f"{where}: graphs.{kind} inputs/outputs do not match the "
                                  f"parameters (want {list(want.inputs)} -> {list(want.outputs)})")
    ort = _ort(raw["ort_training"]) if raw.get("ort_training") else None
    files = {str(k): str(v) for k, v in dict(raw["files"]).items()}
    needed = {forward.file, evalg.file, *(g.file for g in steps.values()),
              *(g.file for g in dpsgd.values()), str(raw["init"]),
              str(raw["mask"]), "panel.tsv"}
    if int8 is not None:
        needed.add(int8.file)
    reference = None if raw.get("reference") is None else str(raw["reference"])
    if reference is not None:
        needed.add(reference)
    if ort is not None:
        needed |= {ort.training_model, ort.eval_model, ort.checkpoint, *ort.optimizers.values()}
    if not needed <= set(files):
        raise LocalInputError(f"{where}: files lacks hashes for {sorted(needed - set(files))}")
    for name in files:
        if Path(name).name != name or name.startswith("manifest."):
            raise LocalInputError(f"{where}: files entry {name!r} is not a plain file name")
    return Bundle(path=root, model=str(raw["model"]), model_config=dict(raw["model_config"]),
                  panel_sha256=str(panel["sha256"]), n_sites=n_sites, build=str(panel["build"]),
                  input_encoding=dict(raw["input_encoding"]), loss=str(raw["loss"]),
                  params=params, forward=forward, eval=evalg, steps=steps, proximal=proximal,
                  init=str(raw["init"]), mask_file=str(raw["mask"]), files=files, int8=int8,
                  ort=ort, signed_by=signed_by, dpsgd=dpsgd, reference=reference)


def _param(where: str, i: int, p: Mapping[str, Any]) -> ParamSpec:
    shape = tuple(int(d) for d in p["shape"])
    spec = ParamSpec(name=str(p["name"]), torch_name=str(p.get("torch_name", p["name"])),
                     shape=shape, dtype=str(p["dtype"]))
    if not spec.name.isidentifier() or any(d < 1 for d in shape) or spec.dtype not in _DTYPES:
        raise LocalInputError(f"{where}: parameters[{i}] ({spec.name!r}, shape {list(shape)}, "
                              f"{spec.dtype}) is invalid")
    return spec


def _graph(g: Mapping[str, Any]) -> GraphSpec:
    opt = g.get("optimizer")
    return GraphSpec(file=str(g["file"]), inputs=tuple(str(s) for s in g["inputs"]),
                     outputs=tuple(str(s) for s in g["outputs"]),
                     optimizer=None if opt is None else str(opt),
                     hyper={str(k): float(v) for k, v in dict(g.get("hyper", {})).items()})


def _ort(o: Mapping[str, Any]) -> OrtArtifacts:
    return OrtArtifacts(training_model=str(o["training_model"]), eval_model=str(o["eval_model"]),
                        checkpoint=str(o["checkpoint"]),
                        optimizers={str(k): str(v) for k, v in dict(o["optimizers"]).items()},
                        hyper={str(k): {str(a): float(b) for a, b in dict(v).items()}
                               for k, v in dict(o.get("hyper", {})).items()})


def graph_json(g: GraphSpec) -> dict[str, Any]:
    """A GraphSpec as written in manifest.json."""
    out: dict[str, Any] = {"file": g.file, "inputs": list(g.inputs), "outputs": list(g.outputs)}
    if g.optimizer is not None:
        out["optimizer"] = g.optimizer
        out["hyper"] = dict(g.hyper)
    return out


def read_arrays(root: Path, name: str, specs: Sequence[ParamSpec]) -> dict[str, np.ndarray]:
    """One float32 array per parameter from an .npz of the bundle, checked against the specs."""
    try:
        with np.load(root / name, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise LocalInputError(f"bundle {root}: cannot read {name}: {exc}") from None
    out: dict[str, np.ndarray] = {}
    for p in specs:
        a = arrays.get(p.name)
        if a is None or a.shape != p.shape or a.dtype != np.dtype(p.dtype):
            got = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
            raise LocalInputError(f"bundle {root}: {name}: parameter {p.name} is {got}, manifest "
                                  f"says {p.dtype}{list(p.shape)}")
        out[p.name] = np.ascontiguousarray(a)
    if set(arrays) - set(out):
        raise LocalInputError(f"bundle {root}: {name}: unexpected arrays "
                              f"{sorted(set(arrays) - set(out))}")
    return out
