"""The bundle's INT8 inference model: onnxruntime.quantization with calibration data.

The float forward graph gets the weights baked in as initializers, then `quantize_static`
(QDQ format, per-channel INT8 weights, UINT8 activations) calibrates activation ranges on
standardized dosages the coordinator supplies, e.g. a reference panel's genotypes.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from genofed.errors import LocalInputError
from genofed.export.ort_artifacts import _inputs_to_initializers
from genofed.models.manifest import GraphSpec, int8_graph_names

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 64


def export_int8(forward: Path, params: Mapping[str, np.ndarray], calibration: np.ndarray,
                path: Path) -> GraphSpec:
    """Quantize the forward graph at `forward` with `params` baked in; write it to path."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    x = np.ascontiguousarray(calibration, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or not np.isfinite(x).all():
        raise LocalInputError(f"INT8 export: calibration data must be finite [n, sites], got "
                              f"shape {list(x.shape)}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, Any]] = (
                {"x": x[i:i + CALIBRATION_BATCH]} for i in range(0, len(x), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    model = onnx.load(str(forward))
    _inputs_to_initializers(model, params)
    with tempfile.TemporaryDirectory(prefix="genofed-int8-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        onnx.save_model(model, str(float_path))
        quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    q = onnx.load(str(path))
    q.ir_version = min(q.ir_version, 8)
    onnx.save_model(q, str(path))
    log.info("INT8 model %s: %d nodes, calibrated on %d samples", path.name, len(q.graph.node),
             len(x))
    return int8_graph_names()
