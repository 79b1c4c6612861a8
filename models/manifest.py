"""The model bundle: what the coordinator exports and every device trains (numpy only, no torch).

A bundle is a directory:

    manifest.json   the schema below
    forward.onnx    (x, params...) -> logits
    step_sgd.onnx   (params..., x, y, lr) -> (new params..., loss): one whole SGD step
    init.npz        initial parameters, keyed by ONNX name
    panel.tsv       the panel's canonical TSV (genofed.models.panel)

manifest.json:

    {
      "format": "genofed-bundle/1",
      "model": "logreg" | "mlp",
      "model_config": {"seed": 0, "hidden": 32},           # what rebuilds the torch module
      "panel": {"sha256": <Panel.sha256()>, "n_sites": K, "build": "GRCh38"},
      "input_encoding": {"kind": "standardized_dosage", "missing": "2p"},
      "loss": "bce_with_logits_mean",
      "parameters": [                                      # graph order
        {"name": "linear_weight", "torch_name": "linear.weight",
         "shape": [1, K], "dtype": "float32"}, ...
      ],
      "graphs": {
        "forward": {"file": "forward.onnx",
                    "inputs": ["x", <names>...], "outputs": ["logits"]},
        "step": {"file": "step_sgd.onnx", "optimizer": "sgd",
                 "inputs": [<names>..., "x", "y", "lr"],
                 "outputs": [<"new_" + names>..., "loss"]}
      },
      "init": "init.npz",
      "files": {"forward.onnx": <sha256 hex>, "step_sgd.onnx": ..., "init.npz": ...,
                "panel.tsv": ...}
    }

`name` is the ONNX input name (a Python identifier: the torch name with "." -> "_"). Shapes of
x, y and logits: x float32 [B, K], y float32 [B] in {0, 1}, logits float32 [B], lr and loss
float32 scalars; B is dynamic. Output i < n of the step graph is the new value of parameter i.
Since panel.tsv is the canonical TSV, its file hash equals `panel.sha256`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed.errors import GenofedError
from genofed.models.panel import Panel, load_panel

FORMAT = "genofed-bundle/1"
MANIFEST = "manifest.json"
STEP_EXTRA_INPUTS = ("x", "y", "lr")
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
    step: GraphSpec
    init: str
    files: Mapping[str, str]

    def file(self, name: str) -> Path:
        """Absolute path of a file of the bundle."""
        return self.path / name

    @property
    def n_params(self) -> int:
        """Total number of trainable scalars."""
        return sum(p.size for p in self.params)

    def initial_params(self) -> dict[str, np.ndarray]:
        """The initial parameters from init.npz, checked against the specs."""
        return _read_init(self.path, self.init, self.params)

    def panel(self) -> Panel:
        """The bundle's panel, checked against the manifest."""
        panel = load_panel(self.file("panel.tsv"))
        if panel.sha256() != self.panel_sha256 or len(panel) != self.n_sites:
            raise GenofedError(f"{self.path}: panel.tsv does not match the manifest's panel")
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
        raise GenofedError(f"parameter name {torch_name!r} does not map to an identifier")
    return name


def step_graph_names(specs: Sequence[ParamSpec]) -> GraphSpec:
    """Input and output names of the SGD step graph for these parameters."""
    names = tuple(p.name for p in specs)
    return GraphSpec(file="step_sgd.onnx", inputs=(*names, *STEP_EXTRA_INPUTS),
                     outputs=(*(f"new_{n}" for n in names), "loss"), optimizer="sgd")


def forward_graph_names(specs: Sequence[ParamSpec]) -> GraphSpec:
    """Input and output names of the forward graph for these parameters."""
    return GraphSpec(file="forward.onnx", inputs=("x", *(p.name for p in specs)),
                     outputs=("logits",))


def flatten(params: Mapping[str, np.ndarray], specs: Sequence[ParamSpec]) -> np.ndarray:
    """Concatenate parameters into one float32 vector, in manifest order."""
    missing = [p.name for p in specs if p.name not in params]
    extra = sorted(set(params) - {p.name for p in specs})
    if missing or extra:
        raise GenofedError(f"parameters do not match the model: missing {missing}, "
                           f"unexpected {extra}")
    parts = []
    for p in specs:
        a = np.asarray(params[p.name])
        if a.shape != p.shape:
            raise GenofedError(f"parameter {p.name}: shape {list(a.shape)}, "
                               f"want {list(p.shape)}")
        parts.append(a.astype(np.float32, copy=False).ravel())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def unflatten(vec: np.ndarray, specs: Sequence[ParamSpec]) -> dict[str, np.ndarray]:
    """Split a flat vector back into named float32 arrays (copies), in manifest order."""
    v = np.asarray(vec)
    want = sum(p.size for p in specs)
    if v.ndim != 1 or v.shape[0] != want:
        raise GenofedError(f"parameter vector has shape {list(v.shape)}, want [{want}]")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for p in specs:
        out[p.name] = v[offset:offset + p.size].astype(np.float32).reshape(p.shape)
        offset += p.size
    return out


def load_bundle(path: str | Path) -> Bundle:
    """Read manifest.json, validate it and verify the sha256 of every file it lists."""
    root = Path(path)
    mpath = root / MANIFEST
    try:
        raw = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise GenofedError(f"bundle {root}: {MANIFEST} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenofedError(f"bundle {root}: cannot read {MANIFEST}: {exc}") from None
    try:
        bundle = _parse(root, raw)
    except KeyError as exc:
        raise GenofedError(f"bundle {root}: {MANIFEST}: missing key {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise GenofedError(f"bundle {root}: {MANIFEST}: malformed: {exc}") from None
    for name, want in bundle.files.items():
        fpath = root / name
        if not fpath.is_file():
            raise GenofedError(f"bundle {root}: {name} is missing")
        got = sha256_file(fpath)
        if got != want:
            raise GenofedError(f"bundle {root}: {name} has sha256 {got[:16]}..., manifest "
                               f"says {want[:16]}... (corrupt or tampered)")
    if bundle.files["panel.tsv"] != bundle.panel_sha256:
        raise GenofedError(f"bundle {root}: panel.tsv is not the panel the manifest pins")
    bundle.initial_params()  # shapes in the manifest must match the shipped weights
    return bundle


def _parse(root: Path, raw: Any) -> Bundle:
    where = f"bundle {root}: {MANIFEST}"
    if not isinstance(raw, dict):
        raise GenofedError(f"{where}: top level must be an object")
    if raw.get("format") != FORMAT:
        raise GenofedError(f"{where}: format is {raw.get('format')!r}, want {FORMAT!r}")
    params = tuple(_param(where, i, p) for i, p in enumerate(raw["parameters"]))
    if not params or len({p.name for p in params}) != len(params):
        raise GenofedError(f"{where}: parameters must be a non-empty list of unique names")
    panel = raw["panel"]
    n_sites = int(panel["n_sites"])
    if n_sites < 1:
        raise GenofedError(f"{where}: panel.n_sites must be >= 1")
    graphs = raw["graphs"]
    forward = _graph(graphs["forward"])
    step = _graph(graphs["step"])
    for kind, got, want in (("forward", forward, forward_graph_names(params)),
                            ("step", step, step_graph_names(params))):
        if (got.inputs, got.outputs) != (want.inputs, want.outputs):
            raise GenofedError(f"{where}: graphs.{kind} inputs/outputs do not match the "
                               f"parameters (want {list(want.inputs)} -> {list(want.outputs)})")
    if step.optimizer != "sgd":
        raise GenofedError(f"{where}: unsupported step optimizer {step.optimizer!r}")
    files = {str(k): str(v) for k, v in dict(raw["files"]).items()}
    needed = {forward.file, step.file, str(raw["init"]), "panel.tsv"}
    if not needed <= set(files):
        raise GenofedError(f"{where}: files lacks hashes for {sorted(needed - set(files))}")
    for name in files:
        if Path(name).name != name or name == MANIFEST:
            raise GenofedError(f"{where}: files entry {name!r} is not a plain file name")
    return Bundle(path=root, model=str(raw["model"]), model_config=dict(raw["model_config"]),
                  panel_sha256=str(panel["sha256"]), n_sites=n_sites, build=str(panel["build"]),
                  input_encoding=dict(raw["input_encoding"]), loss=str(raw["loss"]),
                  params=params, forward=forward, step=step, init=str(raw["init"]),
                  files=files)


def _param(where: str, i: int, p: Mapping[str, Any]) -> ParamSpec:
    shape = tuple(int(d) for d in p["shape"])
    spec = ParamSpec(name=str(p["name"]), torch_name=str(p.get("torch_name", p["name"])),
                     shape=shape, dtype=str(p["dtype"]))
    if not spec.name.isidentifier() or any(d < 1 for d in shape) or spec.dtype not in _DTYPES:
        raise GenofedError(f"{where}: parameters[{i}] ({spec.name!r}, shape {list(shape)}, "
                           f"{spec.dtype}) is invalid")
    return spec


def _graph(g: Mapping[str, Any]) -> GraphSpec:
    opt = g.get("optimizer")
    return GraphSpec(file=str(g["file"]), inputs=tuple(str(s) for s in g["inputs"]),
                     outputs=tuple(str(s) for s in g["outputs"]),
                     optimizer=None if opt is None else str(opt))


def _read_init(root: Path, name: str, specs: Sequence[ParamSpec]) -> dict[str, np.ndarray]:
    try:
        with np.load(root / name, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise GenofedError(f"bundle {root}: cannot read {name}: {exc}") from None
    out: dict[str, np.ndarray] = {}
    for p in specs:
        a = arrays.get(p.name)
        if a is None or a.shape != p.shape or a.dtype != np.dtype(p.dtype):
            got = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
            raise GenofedError(f"bundle {root}: {name}: parameter {p.name} is {got}, manifest "
                               f"says {p.dtype}{list(p.shape)}")
        out[p.name] = np.ascontiguousarray(a)
    if set(arrays) - set(out):
        raise GenofedError(f"bundle {root}: {name}: unexpected arrays "
                           f"{sorted(set(arrays) - set(out))}")
    return out
