"""The service applies the core's effects in batches (`effects.batch`): durable runs in one
transaction, publication runs in one round trip, acknowledgements last. Over a simulated run
with dropouts, cut into batches as deliveries arrive, the order the service applies must
still pass the effect-order property (`support/effect_order.py`)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from support.effect_order import OrderViolation, check_effect_order
from support.simfed import LAYOUT, MODEL, config, update

from genofed.aggregator.effects import Ack, Effect, Publish, batch
from genofed.aggregator.simulate import Simulation, devices, seeded
from genofed.protocol.secagg import Stage


def silence(device: str, round_: int) -> Stage | None:
    rng = np.random.default_rng([round_, int(device[3:])])
    return Stage(int(rng.integers(0, 5))) if rng.random() < 0.2 else None


@pytest.fixture(scope="module")
def sim() -> Simulation:
    s = Simulation(config(4), MODEL, devices(12, update, silence, seed=5),  # type: ignore[arg-type]
                   seeded(5))
    s.run()
    return s


def applied(log: list[Effect], rng: np.random.Generator, *, acks_first: bool = False
            ) -> list[Effect]:
    """The effects in the order the service applies them, the log cut into batches."""
    out: list[Effect] = []
    i = 0
    while i < len(log):
        k = int(rng.integers(1, 60))
        b = batch(log[i:i + k])
        runs = [e for r in b.runs for e in r]
        out += [*b.acks, *runs] if acks_first else [*runs, *b.acks]
        i += k
    return out


def test_batches_keep_the_effect_order(sim: Simulation) -> None:
    key = sim.identity.public
    assert check_effect_order(applied(sim.log, np.random.default_rng(1)), key, "sim",
                              LAYOUT) > 0
    b = batch(sim.log)
    kinds = [isinstance(r[0], Publish) for r in b.runs]
    assert all(a != z for a, z in pairwise(kinds))  # runs alternate
    assert len(b.runs) < sum(not isinstance(e, Ack) for e in sim.log) / 2  # and group


def test_acknowledging_before_storing_is_caught(sim: Simulation) -> None:
    with pytest.raises(OrderViolation):
        check_effect_order(applied(sim.log, np.random.default_rng(1), acks_first=True),
                           sim.identity.public, "sim", LAYOUT)
