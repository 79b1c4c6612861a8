"""What the aggregator's core does at start with a round a previous run left in flight in its
SQLite store: resume it from the stored task and messages, or journal it aborted with the
reason, and never both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.tasks import open_task

from genofed.agent.secure import Participation
from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.core import AggregatorCore
from genofed.aggregator.effects import Count, Effect, Journal, Publish, Restored
from genofed.aggregator.rounds import ModelSpec
from genofed.aggregator.state import load_identity, state_path
from genofed.aggregator.store import Store
from genofed.models.manifest import load_bundle
from genofed.protocol.codec import choose_bits
from genofed.protocol.roundspec import CodecSpec
from genofed.protocol.secagg import SigningIdentity, Stage
from genofed.protocol.topics import Topics

DEVICES = [f"dev{i}" for i in range(5)]


@pytest.fixture
def cfg(tmp_path: Path, logreg_bundle: Path) -> AggregatorConfig:
    return AggregatorConfig(federation="fed", bundle=logreg_bundle, state_dir=tmp_path / "agg")


def _restart(cfg: AggregatorConfig) -> tuple[AggregatorCore, Store, list[Effect]]:
    """A new aggregator process: its core, its store, and what it does first (the durable
    effects applied, as the service applies them)."""
    core = AggregatorCore(cfg, load_identity(cfg.state_dir), ModelSpec.of(load_bundle(cfg.bundle)))
    store = Store(state_path(cfg.state_dir))
    effects = core.handle(Restored(store.snapshot(), now=100.0))
    for e in effects:
        if not isinstance(e, Count | Publish):
            store.apply(e)
    return core, store, effects


def _left_in_flight(cfg: AggregatorConfig, *, advertised: int, stage: str | None = None,
                    sealer: SigningIdentity | None = None, store_task: bool = True) -> bytes:
    """A first run that opened round 0, stored `advertised` advertisements, and died."""
    core, store, _ = _restart(cfg)
    ids = {d: SigningIdentity.generate() for d in DEVICES}
    n = core.model.n_params
    bits = choose_bits(len(ids), 10.0, 1e6)
    task = open_task("fed", 0, {d: k.public for d, k in ids.items()}, core.identity.public,
                     n, model_version=0, codec=CodecSpec(10.0, 1e6, bits, bytes(32)))
    assert task.codec is not None
    sealed = task.seal(sealer or core.identity)
    store.open_round(0, 0, 1.0, sealed if store_task else None)
    rng = np.random.default_rng(0)
    for d in DEVICES[:advertised]:
        p = Participation(task, d, ids[d], task.codec.pipeline(n).encode(np.zeros(n), rng))
        store.put_message(0, "ADVERTISE_KEYS", d, p.advertise())
    if stage:
        store.set_stage(0, stage)
    store.close()
    return sealed


def test_round_in_flight_is_resumed_with_its_stored_messages(cfg: AggregatorConfig) -> None:
    sealed = _left_in_flight(cfg, advertised=4)
    core, store, effects = _restart(cfg)
    f = core.flight
    assert f is not None and f.task.round == 0 and f.rnd.stage == Stage.ADVERTISE_KEYS
    assert f.rnd.received == set(DEVICES[:4]) and f.rnd.pending == {DEVICES[4]}
    assert not any(isinstance(e, Journal) for e in effects) and not core.records
    assert store.open_round_in_flight() is not None  # still open in the journal
    assert Count("resumed") in effects
    # The model and the round's task go out again (a device that had them drops the copy).
    topics = Topics("fed")
    published = [(e.topic, e.payload) for e in effects if isinstance(e, Publish)]
    assert [t for t, _ in published] == [topics.model, topics.task]
    assert published[1][1] == sealed


@pytest.mark.parametrize(("left", "why"), [
    ({"store_task": False}, "its task was not stored"),
    ({"sealer": SigningIdentity.generate()}, "bad signature"),  # not this aggregator's task
    ({"stage": "SHARE_KEYS", "advertised": 1}, "ended the round before SHARE_KEYS"),
    ({"stage": "TEA_BREAK"}, "unknown stage 'TEA_BREAK'"),  # a damaged database
])
def test_round_that_cannot_be_resumed_is_journaled_aborted(
        cfg: AggregatorConfig, left: dict[str, object], why: str) -> None:
    _left_in_flight(cfg, **{"advertised": 4, **left})  # type: ignore[arg-type]
    core, store, effects = _restart(cfg)
    assert core.flight is None and store.open_round_in_flight() is None
    [rec] = store.journal()
    assert rec["status"] == "aborted" and rec["round"] == 0
    assert rec["reason"].startswith("aggregator restarted; the round could not be resumed")
    assert why in rec["reason"]
    assert store.next_round() == 1 and core.version == 0  # the next round starts afresh
    assert Count("resumed") not in effects and Count("rounds", "aborted") in effects
