"""A small model and federation for the in-memory simulator (`aggregator/simulate.py`),
shared by the tests that run rounds on the aggregator's core: a 25-parameter layout with a
third of its weights pruned, an aggregator configuration, and each device's update."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genofed.aggregator.cohort import CohortPolicy
from genofed.aggregator.config import AggregatorConfig, CodecSection, RoundsSection
from genofed.aggregator.rounds import ModelSpec
from genofed.models.layout import ParamLayout
from genofed.models.manifest import ParamSpec

SPECS = (ParamSpec("w", "w", (1, 24)), ParamSpec("b", "b", (1,)))
KEEP = np.array([i % 3 != 2 for i in range(24)] + [True])  # a third of the weights pruned
LAYOUT = ParamLayout(SPECS, KEEP)
MODEL = ModelSpec(LAYOUT, "ab" * 32, np.zeros(25, np.float32))
CLIP = 1.0


def config(rounds: int, *, min_participants: int = 3) -> AggregatorConfig:
    return AggregatorConfig(
        federation="sim", bundle=Path("unused"), state_dir=Path("unused"),
        rounds=RoundsSection(rounds=rounds, stage_timeout_s=10.0, retry_s=1.0),
        cohort=CohortPolicy(min_participants=min_participants, max_participants=100),
        codec=CodecSection(clip=CLIP, scale=1e6))


def update(device: str, round_: int, weights: np.ndarray) -> np.ndarray:
    """A device's delta: noise whose norm is sometimes above the clip."""
    rng = np.random.default_rng([round_, int(device[3:])])
    return rng.normal(0, 0.25, weights.size)
