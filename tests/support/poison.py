"""Ring vectors a poisoning device sends instead of its honest encoding (test-only).

Each attack is one the issue measured against the weighted codec, or the strongest one left
under the aggregate check (`protocol/codec_mean.py`):

- `skip-clip`: the device's update times 1000, not clipped;
- `crafted-ring`: 2^(b-2) in every ring value (a quarter of the ring, far outside any sum);
- `negative-weight`: its clipped update with weight -993 where every update weighs 1 (the
  weighted codec's attack: -993 in the weight coordinate);
- `inflated-weight`: its clipped update with weight 1000 (the weighted codec's cap);
- `within-bound`: a vector of norm 0.9 n C against its own update's direction, so the sum of
  n inputs stays inside the aggregate bound n C as long as the others' norms sum below 0.1 n C:
  the most a device can move the mean without being caught (up to 2C from the honest mean);
- `within-bound-flip`: the same norm against the global model's direction (the model every
  device is sent), which turns a linear model's scores around when its norm is below 0.9 C.

All but `crafted-ring` go through the pipeline's rotation and scale, then are rounded and
wrapped into the ring without the clamp at +-sC that an honest encoding has.
"""

from __future__ import annotations

import numpy as np

from genofed.protocol.codec import L2Clip, Rotation, StochasticRounding
from genofed.protocol.codec_mean import MeanPipeline
from genofed.protocol.ring import RingVector
from genofed.protocol.schema import SecureTask

KINDS = ("skip-clip", "crafted-ring", "negative-weight", "inflated-weight", "within-bound",
         "within-bound-flip")
WITHIN = 0.9  # the within-bound attacker's share of the aggregate bound n C


def unclipped(pipe: MeanPipeline, x: np.ndarray) -> RingVector:
    """x rotated, scaled, rounded and wrapped with no clip and no clamp."""
    stages = pipe.pipeline.stages
    rotation = next(s for s in stages if isinstance(s, Rotation))
    rounding = next(s for s in stages if isinstance(s, StochasticRounding))
    ints = np.rint(rotation.encode(np.asarray(x, np.float64)) * rounding.scale)
    ring = pipe.pipeline.ring
    return np.array([int(v) % (1 << ring.bits) for v in ints], dtype=ring.word)


def poisoned(kind: str, task: SecureTask, model: np.ndarray, trained: np.ndarray
             ) -> RingVector:
    """The ring vector of attack `kind` for a device sent the global `model` whose honest
    update is `trained` (both the trained coordinates)."""
    assert task.codec is not None
    pipe = task.codec.pipeline(trained.size)
    clip = L2Clip(pipe.clip)
    n = len(task.members())
    if kind == "skip-clip":
        return unclipped(pipe, 1000.0 * trained)
    if kind == "crafted-ring":
        return np.full(pipe.dim, 1 << (pipe.pipeline.bits - 2), dtype=pipe.pipeline.ring.word)
    if kind == "negative-weight":
        return unclipped(pipe, -993.0 * clip.encode(trained))
    if kind == "inflated-weight":
        return unclipped(pipe, 1000.0 * clip.encode(trained))
    if kind in ("within-bound", "within-bound-flip"):
        away = model if kind == "within-bound-flip" and np.any(model) else trained
        return unclipped(pipe, -WITHIN * n * pipe.clip * away / np.linalg.norm(away))
    raise ValueError(f"no poisoning {kind!r}; have {', '.join(KINDS)}")
