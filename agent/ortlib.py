"""onnxruntime for the agent, imported without letting it import torch (or onnx).

The onnxruntime-training-cpu build (1.19.2) imports torch and onnx from its C extension
whenever they are installed (for ORTModule's tensor interop, which the agent never uses); a
device process must not pay torch's import time and memory. The extension tolerates their
absence, so while it loads, `sys.modules[name]` is None for both, which makes their import fail
inside it. Stock onnxruntime imports neither; there this changes nothing.
"""

from __future__ import annotations

import sys

_BLOCK = tuple(m for m in ("torch", "onnx") if m not in sys.modules) \
    if "onnxruntime" not in sys.modules else ()
for _name in _BLOCK:
    sys.modules[_name] = None  # type: ignore[assignment]
try:
    import onnxruntime as ort
finally:
    for _name in _BLOCK:
        if _name in sys.modules and sys.modules[_name] is None:
            del sys.modules[_name]

__all__ = ["ort"]
