"""`privacy_utility`'s check that its fast path is the aggregator's: one small federation run
twice, through `aggregator/simulate.py` (the aggregator's core, SecAgg+ on every device, the
signed task and model) and through `privacy/crossdevice.py` (the codec's encodings summed in
the ring), the same devices and local training in both. The two differ only in the draws of
stochastic rounding (each device's generator differs between the paths), so each round's
decoded mean agrees to within the rounding's noise, ~sqrt(n) / (n s) a coordinate.

The noise stage is not in this check: the aggregator's round plan does not yet carry a DP
codec (the lead wires it into the signed task), so it runs the plain codec on both paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genofed.aggregator.cohort import CohortPolicy
from genofed.aggregator.config import AggregatorConfig, CodecSection, RoundsSection
from genofed.aggregator.rounds import ModelSpec
from genofed.aggregator.simulate import Simulation, devices, seeded
from genofed.models.manifest import Bundle
from genofed.privacy.crossdevice import LocalUpdate, plain_codec, run_federation
from genofed.protocol.codec import choose_bits


def agreement(b: Bundle, local: LocalUpdate, n: int, rounds: int, clip: float,
              scale: float) -> dict[str, object]:
    """Both paths on genomes 0..n-1, every device every round: the largest coordinate
    difference of any round's decoded mean, against that round's largest coordinate."""
    cfg = AggregatorConfig(
        federation="privacy", bundle=Path("unused"), state_dir=Path("unused"),
        rounds=RoundsSection(rounds=rounds, stage_timeout_s=600.0, retry_s=1.0),
        cohort=CohortPolicy(min_participants=n, max_participants=n),
        codec=CodecSection(clip=clip, scale=scale))
    model = ModelSpec.of(b)

    def update(device: str, round_: int, weights: np.ndarray) -> np.ndarray:
        return local(weights, int(device[3:]), np.random.default_rng([round_, 7]))

    sim = Simulation(cfg, model, devices(n, update, seed=5), seeded(5))
    sim.run()
    secure = [j.update for j in sorted(sim.journal, key=lambda j: j.record.round)
              if j.update is not None]
    fast = run_federation(b.layout, model.initial, [range(n)] * rounds, local,
                          plain_codec(model.n_trained, clip, scale, choose_bits(n, clip, scale)))
    diff = max(float(np.abs(a - f).max()) for a, f in zip(secure, fast.aggregates, strict=True))
    top = max(float(np.abs(a).max()) for a in secure)
    return {"agree_devices": n, "agree_rounds": len(secure), "agree_scale": scale,
            "agree_max_abs_diff": diff, "agree_max_abs_coordinate": top,
            "agree_rounding_sd": float(np.sqrt(n) / (2 * n * scale))}
