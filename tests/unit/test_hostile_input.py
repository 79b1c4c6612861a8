"""No input from the network ends a process: arbitrary bytes and JSON on every topic the
aggregator and the agent read, including payloads signed with the keys they trust.

The aggregator's core takes them in the middle of real rounds (the in-memory federation of
`aggregator/simulate.py`): each delivery is acknowledged, a bad one is counted with a reason,
and the rounds complete. The agent takes them through `Agent.handle`, the daemon's one entry
for network input, with a round in progress so that inbox messages reach its SecAgg+ client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.agents import agent_config
from support.simfed import MODEL, config, update
from support.tasks import open_task

from genofed.aggregator.effects import Count
from genofed.aggregator.simulate import Simulation, devices, seeded
from genofed.protocol.envelope import seal
from genofed.protocol.secagg import SigningIdentity
from genofed.protocol.secagg.keys import IdentitySeed
from genofed.protocol.topics import Topics

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=20)


def _payloads(header_type: str = "task") -> st.SearchStrategy[bytes]:
    """Bytes of every kind a parser meets: random, JSON, magic-prefixed, and JSON status."""
    return st.one_of(
        st.binary(max_size=600),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=400).map(lambda b: b"GSA1" + b),
        st.binary(max_size=400).map(lambda b: b"GFS1" + b),
        st.dictionaries(st.sampled_from(["device", "state", "round"]), JSON, max_size=3)
        .map(lambda d: json.dumps(d).encode()),
        st.just(b'{"state": "' + b"[" * 5000 + b'"}'),
    )


# -- the aggregator --------------------------------------------------------------------------

def _topics(fed: Topics) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([fed.outbox("dev000"), fed.status("dev000"), fed.outbox("nobody"),
                         fed.status("nobody"), fed.inbox("dev000"), fed.task, fed.model,
                         f"{fed.base}/device/dev000/outbox/extra", f"{fed.base}/device//outbox",
                         "genofed/v1/other/device/dev000/outbox", "#"]),
        st.text(max_size=60))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_aggregator_core_takes_anything_mid_round(data: st.DataObject) -> None:

    fed = Topics("sim")
    junk: list[tuple[str, bytes]] = data.draw(st.lists(st.tuples(_topics(fed), _payloads()),
                                                        min_size=1, max_size=25))
    sent = 0

    def hostile_update(device: str, round_: int, w: np.ndarray) -> tuple[np.ndarray, int]:
        nonlocal sent
        if device == "dev000":  # while the round is open: junk among the genuine messages
            sim.queue.extend(("aggregator", t, p) for t, p in junk)
            sent += len(junk)
        return update(device, round_, w)

    sim = Simulation(config(2), MODEL, devices(4, hostile_update, seed=4), seeded(4))
    sim.run(max_ticks=2000)
    assert [j.record.status for j in sim.journal][-2:] == ["completed", "completed"]
    assert not sim.unacked  # every delivery, junk included, acknowledged
    rejected = sum(c.value for c in sim.log if isinstance(c, Count) and c.metric == "rejected")
    # Whatever is not on a status topic must be dropped (a status may be a valid one).
    per_round = sum(1 for t, _ in junk if not t.endswith("/status"))
    assert rejected >= per_round * sent // len(junk)


# -- the agent -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agent(cohort: Path, logreg_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real agent (its bundle, VCF, identity), in the middle of a round."""
    from genofed.agent.config import load_agent_config
    from genofed.agent.daemon import Agent
    from genofed.agent.secure import join
    from genofed.models.signing import load_signing_key
    from genofed.protocol.secagg import SecAggParams

    root = tmp_path_factory.mktemp("hostile-agent")
    a = Agent(load_agent_config(agent_config(root, cohort, logreg_bundle, "step")))
    a.aggregator_identity = SigningIdentity(IdentitySeed(
        load_signing_key(root / "agg.key").encode()))
    roster = {"dev00": a.identity.public,
              **{f"dev{i}": SigningIdentity.generate().public for i in (1, 2, 3)}}
    task = open_task("demo", 4, roster, a.aggregator_identity.public, a.layout.n_trained,
                     params=SecAggParams(4, 3, 2))
    a.participation = join(task, "dev00", a.identity, np.zeros(a.layout.n_trained),
                           np.random.default_rng(0))
    a.participation.advertise()
    from genofed.protocol.envelope import open_envelope
    from genofed.protocol.schema import ModelRelease

    release = ModelRelease("demo", 1, a.bundle.panel_sha256, *a.layout.quantize(
        a.layout.flatten(a.bundle.initial_params())))
    a.genuine_headers = [
        open_envelope(m.seal(a.aggregator_identity), a.aggregator_identity.public,
                      expect=m.TYPE, federation="demo")[0] for m in (task, release)]
    return a


def _signed(agg: SigningIdentity, genuine: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Envelopes the agent's trusted aggregator signed: arbitrary headers and bodies, and
    genuine task and model headers with one field, at any depth, replaced by any JSON value
    (an infinite round, a string where a number goes, a list for a key, ...)."""
    headers = st.fixed_dictionaries(
        {"type": st.sampled_from(["task", "model", "other"]),
         "federation": st.sampled_from(["demo", "other"])},
        optional={k: JSON for k in ("round", "state", "model_version", "deadline_s",
                                    "training", "codec", "secagg", "version", "panel_sha256",
                                    "encoding", "n_values", "n_scales")})
    odd = JSON | st.sampled_from([float("inf"), float("nan"), -1, 1 << 70, True, "7", 2.5])

    def mutate(h: dict[str, Any], where: list[str], value: Any) -> dict[str, Any]:
        out = json.loads(json.dumps(h))
        node = out
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        return out

    def paths(h: dict[str, Any], prefix: list[str]) -> list[list[str]]:
        found = []
        for k, v in h.items():
            found.append([*prefix, k])
            if isinstance(v, dict):
                found += paths(v, [*prefix, k])
        return found

    nearly = st.sampled_from(genuine).flatmap(lambda h: st.tuples(
        st.just(h), st.sampled_from(paths(h, [])), odd)).map(lambda t: mutate(*t))
    return st.one_of(st.tuples(headers, st.binary(max_size=300)).map(lambda hb: seal(agg, *hb)),
                     nearly.map(lambda h: seal(agg, h)))


@pytest.mark.parametrize(("where", "value"), [
    (["round"], float("inf")), (["model_version"], "7"), (["round"], True),
    (["training", "local_epochs"], float("inf")), (["training", "lr"], float("nan")),
    (["codec", "bits"], 2.5), (["secagg", "n"], 1 << 70), (["secagg", "roster"], [[1, 2, 3]]),
    (["secagg", "roster"], "dev00"), (["codec"], []), (["deadline_s"], None)])
def test_agent_drops_a_signed_task_with_one_odd_field(agent: Any, where: list[str],
                                                      value: Any) -> None:
    task = agent.genuine_headers[0]
    h = json.loads(json.dumps(task))
    node = h
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    before = agent.rejected
    assert agent.handle(Topics("demo").task, seal(agent.aggregator_identity, h)) is None
    assert agent.rejected == before + 1


@settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_agent_takes_anything_on_its_topics(agent: Any, data: st.DataObject) -> None:
    fed = Topics("demo")
    topic = data.draw(st.sampled_from([fed.task, fed.model, fed.inbox("dev00"),
                                       fed.inbox("dev01"), fed.outbox("dev00"), "x/y"]))
    payload = data.draw(st.one_of(_payloads(), _signed(agent.aggregator_identity,
                                                       agent.genuine_headers)))
    before = agent.rejected
    reply = agent.handle(topic, payload)  # must not raise
    assert reply is None or isinstance(reply, bytes)
    assert reply is not None or agent.rejected >= before
