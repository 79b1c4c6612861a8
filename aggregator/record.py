"""What the journal keeps of one round (as the demo and the tests read it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RoundRecord:
    """One closed round. `examples` is the survivors' total weight: each update counts 1
    (`protocol/codec_mean.py`), so it equals `participants`;
    `mean_loss` is NaN: devices send no loss in the clear (the demo measures the global model
    on its test set instead)."""

    round: int
    model_version: int
    status: str  # "completed" or "aborted"
    participants: int
    devices: tuple[str, ...]
    examples: int
    mean_loss: float
    bytes_up: int
    bytes_down: int
    seconds: float
    cohort: int = 0
    reason: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # device: why (provable disruption)
    # the privacy ledger's entry for a round whose sum was unmasked (`aggregator/privacy.py`)
    privacy: dict[str, Any] | None = None
