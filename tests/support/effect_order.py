"""The order of the aggregator's effects as a property, checked over a recorded run.

An acknowledgement, or a publication, must never get ahead of the durable state it depends
on, or a crash between the two loses an update the broker was told is safe, or leaves devices
holding something the restarted aggregator does not know. Over the effects a run applied, in
order and across restarts:

- an acknowledged outbox message that is stored anywhere in the run is stored before its Ack;
- a published open task was stored (byte for byte) before; a `waiting` or `finished` task
  names a model version stored before;
- a published model version was stored before, and its INT8 values are those weights;
- a request published to a device's inbox for round r and stage S follows the record that
  round r reached stage S.

Publications are decoded here from their bytes (with the aggregator's public key), so the
check does not take the core's word for what it published.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genofed.aggregator.effects import (
    Ack,
    Effect,
    Journal,
    Publish,
    StoreMessage,
    StoreModel,
    StoreRound,
    StoreStage,
)
from genofed.models.layout import ParamLayout
from genofed.protocol.schema import ModelRelease, SecureTask
from genofed.protocol.secagg import IdentityKey
from genofed.protocol.secagg.messages import decode
from genofed.protocol.topics import Topics


class OrderViolation(AssertionError):
    """An effect came before what it depends on."""


def check_effect_order(log: Sequence[Effect], aggregator: IdentityKey, federation: str,
                       layout: ParamLayout) -> int:
    """Raise OrderViolation at the first effect that gets ahead of the state it depends on;
    returns how many acknowledgements and publications were checked."""
    topics = Topics(federation)
    stored_payloads = {(e.device, e.payload) for e in log if isinstance(e, StoreMessage)}
    kept: set[tuple[str, bytes]] = set()
    rounds: dict[int, bytes] = {}
    stages: set[tuple[int, str]] = set()
    models: dict[int, np.ndarray] = {}
    checked = 0
    for i, e in enumerate(log):
        if isinstance(e, StoreMessage):
            kept.add((e.device, e.payload))
        elif isinstance(e, StoreRound):
            rounds[e.round] = e.task
        elif isinstance(e, StoreStage):
            stages.add((e.round, e.stage))
        elif isinstance(e, StoreModel):
            models[e.version] = e.weights
        elif isinstance(e, Journal) and e.model is not None:
            models[e.model[0]] = e.model[1]
        elif isinstance(e, Ack):
            token = e.token
            topic, payload = getattr(token, "topic", ""), getattr(token, "payload", b"")
            device = topics.device_of(topic)
            key = (device or "", payload)
            if topic.endswith("/outbox") and key in stored_payloads and key not in kept:
                raise OrderViolation(f"effect {i}: {device}'s message acknowledged before it "
                                     "was stored")
            checked += 1
        elif isinstance(e, Publish):
            _check_publish(i, e, topics, aggregator, federation, layout, rounds, stages, models)
            checked += 1
    return checked


def _check_publish(i: int, e: Publish, topics: Topics, aggregator: IdentityKey,
                   federation: str, layout: ParamLayout, rounds: dict[int, bytes],
                   stages: set[tuple[int, str]], models: dict[int, np.ndarray]) -> None:
    if e.topic == topics.task:
        task = SecureTask.open(e.payload, aggregator, federation)
        if task.state == "open" and rounds.get(task.round) != e.payload:
            raise OrderViolation(f"effect {i}: round {task.round}'s task published before it "
                                 "was stored")
        if task.state != "open" and task.model_version not in models:
            raise OrderViolation(f"effect {i}: a {task.state} task names model version "
                                 f"{task.model_version}, not stored")
    elif e.topic == topics.model:
        release = ModelRelease.open(e.payload, aggregator, federation)
        if release.version not in models:
            raise OrderViolation(f"effect {i}: model version {release.version} published "
                                 "before it was stored")
        got = layout.dequantize(release.values, release.scales)
        if not np.allclose(got, models[release.version], atol=float(release.scales.max()) / 2
                           + 1e-7):
            raise OrderViolation(f"effect {i}: model version {release.version} published with "
                                 "other weights than stored")
    else:
        msg = decode(e.payload)
        r, stage = msg.header.round, msg.STAGE.name
        if r not in rounds or (r, stage) not in stages:
            raise OrderViolation(f"effect {i}: round {r}'s {stage} request published before "
                                 "the round reached that stage in the store")
