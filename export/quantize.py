"""The bundle's INT8 inference model: the forward graph with its weights as INT8 inputs.

The weights enter the graph as the global model travels (`ParamLayout.quantize`: int8 values,
one float32 scale per row of every tensor) and are dequantized per channel in the graph
(DequantizeLinear, axis 0), so the device scores with the federation's current model, not the
one of export time. The input (standardized dosages) is quantized to uint8 per site
(QuantizeLinear/DequantizeLinear, axis 1) over the range the encoding can produce at that
site (`agent.int8score.input_quantization`, which the device uses too). Activations after the
weights stay float: their ranges depend on the weights, which change every round, so a range
calibrated here would clip a later model. The calibration data (reference genotypes, encoded)
is checked to lie in the input's range: a wrong encoding fails here, not on a device.

Written here with onnx's helpers rather than onnxruntime.quantization's `quantize_static`:
that tool bakes the weights in as initializers, and the device cannot re-run it (it needs
the `onnx` package, which the agent profile does not install).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from genofed.agent.int8score import LEVELS, input_quantization
from genofed.errors import LocalInputError
from genofed.models.manifest import GraphSpec, ParamSpec, int8_graph_names

log = logging.getLogger(__name__)


def export_int8(forward: Path, specs: Sequence[ParamSpec], af: np.ndarray,
                calibration: np.ndarray, path: Path) -> GraphSpec:
    """The INT8 inference model of the forward graph at `forward` over a panel of allele
    frequencies `af`; written to `path`."""
    scale, zero = input_quantization(af)
    x = np.asarray(calibration, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != len(scale) or not np.isfinite(x).all():
        raise LocalInputError(f"INT8 export: calibration data must be finite [n, {len(scale)}]"
                              f", got shape {list(x.shape)}")
    lo, hi = scale * (0.0 - zero), scale * (LEVELS - zero.astype(np.float32))
    outside = int(np.count_nonzero((x < lo - scale) | (x > hi + scale)))
    if outside:  # inputs there are clipped: the model still runs, less exactly
        log.warning("INT8 export: %d of %d calibration values lie outside the standardized "
                    "dosage range of their site (encoded with other frequencies?)", outside,
                    x.size)
    model = onnx.load(str(forward))
    g = model.graph
    names = {p.name for p in specs}
    if {i.name for i in g.input} != names | {"x"}:
        raise LocalInputError(f"INT8 export: {forward.name} does not take x and the "
                              f"parameters as inputs")
    renamed = {"x": "x_dequantized", **{n: f"{n}_dequantized" for n in names}}
    for node in g.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    g.initializer.extend([
        numpy_helper.from_array(scale, "x_scale"),
        numpy_helper.from_array(zero, "x_zero_point")])
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"],
                              ["x_quantized"], axis=1, name="quantize_x"),
             helper.make_node("DequantizeLinear", ["x_quantized", "x_scale", "x_zero_point"],
                              ["x_dequantized"], axis=1, name="dequantize_x")]
    x_in = next(i for i in g.input if i.name == "x")
    inputs = [x_in]
    for p in specs:
        inputs += [helper.make_tensor_value_info(f"{p.name}_int8", TensorProto.INT8, p.shape),
                   helper.make_tensor_value_info(f"{p.name}_scale", TensorProto.FLOAT,
                                                 [p.shape[0]])]
        nodes.append(helper.make_node("DequantizeLinear", [f"{p.name}_int8", f"{p.name}_scale"],
                                      [f"{p.name}_dequantized"], axis=0,
                                      name=f"dequantize_{p.name}"))
    del g.input[:]
    g.input.extend(inputs)
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
           default=0) < 13:
        raise LocalInputError("INT8 export: per-channel DequantizeLinear needs opset >= 13")
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    log.info("INT8 model %s: weights as int8 inputs, inputs uint8 per site", path.name)
    return int8_graph_names(specs)
