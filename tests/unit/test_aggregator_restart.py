"""What the aggregator does at start with a round a previous run left in flight: resume it from
the stored task and messages, or journal it aborted with the reason, and never both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.tasks import open_task

from genofed.agent.secure import Participation
from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.service import Aggregator
from genofed.protocol.codec import choose_bits
from genofed.protocol.roundspec import CodecSpec
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import (
    SigningIdentity,
    Stage,
)

DEVICES = [f"dev{i}" for i in range(5)]


@pytest.fixture
def cfg(tmp_path: Path, logreg_bundle: Path) -> AggregatorConfig:
    return AggregatorConfig(federation="fed", bundle=logreg_bundle, state_dir=tmp_path / "agg")


def _task(agg: Aggregator, ids: dict[str, SigningIdentity]) -> SecureTask:
    bits = choose_bits(len(ids), 10.0, 1e6, weight_max=1000)
    return open_task("fed", 0, {d: k.public for d, k in ids.items()}, agg.identity.public,
                     agg.bundle.n_params + 1, model_version=agg.version,
                     codec=CodecSpec(10.0, 1e6, bits, 1000, bytes(32)))


def _left_in_flight(cfg: AggregatorConfig, *, advertised: int, stage: str | None = None,
                    sealer: SigningIdentity | None = None, store_task: bool = True) -> None:
    """A first run that opened round 0, stored `advertised` advertisements, and died."""
    first = Aggregator(cfg)
    ids = {d: SigningIdentity.generate() for d in DEVICES}
    task = _task(first, ids)
    assert task.codec is not None
    pipe = task.codec.pipeline(first.bundle.n_params)
    first.store.open_round(0, 0, 1.0,
                           task.seal(sealer or first.identity) if store_task else None)
    rng = np.random.default_rng(0)
    for d in DEVICES[:advertised]:
        p = Participation(task, d, ids[d], pipe.encode(np.zeros(first.bundle.n_params), 9, rng))
        first.store.put_message(0, "ADVERTISE_KEYS", d, p.advertise())
    if stage:
        first.store.set_stage(0, stage)
    first.store.close()


def test_round_in_flight_is_resumed_with_its_stored_messages(cfg: AggregatorConfig) -> None:
    _left_in_flight(cfg, advertised=4)
    agg = Aggregator(cfg)
    agg.recover()
    assert agg.flight is not None and agg.records == []
    assert agg.flight.rnd.stage == Stage.ADVERTISE_KEYS and agg.flight.task.round == 0
    assert agg.flight.rnd.received == set(DEVICES[:4])
    assert agg.flight.rnd.pending == {DEVICES[4]}
    assert agg.store.open_round_in_flight() is not None  # still open in the journal
    assert agg.metrics.registry.get_sample_value("genofed_rounds_resumed_total") == 1


@pytest.mark.parametrize(("left", "why"), [
    ({"store_task": False}, "its task was not stored"),
    ({"sealer": SigningIdentity.generate()}, "bad signature"),  # not this aggregator's task
    ({"stage": "SHARE_KEYS", "advertised": 1}, "ended the round before SHARE_KEYS"),
    ({"stage": "TEA_BREAK"}, "unknown stage 'TEA_BREAK'"),  # a damaged database
])
def test_round_that_cannot_be_resumed_is_journaled_aborted(
        cfg: AggregatorConfig, left: dict[str, object], why: str) -> None:
    _left_in_flight(cfg, **{"advertised": 4, **left})  # type: ignore[arg-type]
    agg = Aggregator(cfg)
    agg.recover()
    assert agg.flight is None and agg.store.open_round_in_flight() is None
    [rec] = agg.store.journal()
    assert rec["status"] == "aborted" and rec["round"] == 0
    assert rec["reason"].startswith("aggregator restarted; the round could not be resumed")
    assert why in rec["reason"]
    assert agg.store.next_round() == 1 and agg.version == 0  # the next round starts afresh
    assert agg.metrics.registry.get_sample_value("genofed_rounds_resumed_total") == 0
    assert agg.metrics.registry.get_sample_value("genofed_rounds_total",
                                                 {"status": "aborted"}) == 1
