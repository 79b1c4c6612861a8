"""Provable disruption on the real broker (Mosquitto, TLS, ACL, real processes).

Seven devices; dev05 advertises an all-zero X25519 key and dev06 seals garbage to every
neighbour, both signed with their own identities and both answering every stage they are
asked. Before, either one aborted every round it was picked for, and neither was ever rested.
Now the aggregator names both in its log and journal, the first round completes with the five
others (k=6, t=4: each keeps four neighbours), its update their exact mean, and both
rest while the next round completes without them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import faulty_agent
from support.fedtools import codec_atol, exit_status, logs, stop_all, wait_connected

from genofed.aggregator.state import read_journal, read_model
from genofed.cli.demo import spawn, start_broker, write_configs

pytestmark = pytest.mark.integration
FAULTS = {"dev05": {"zero_key": True}, "dev06": {"garbage_shares": True}}


def seven_devices(root: Path, cohort: Path, bundle: Path,
                  faults: dict[str, dict[str, bool]]) -> list[str]:
    """Two rounds of seven devices (k=6, t=4), each with its faults, every one online before
    the aggregator draws its first cohort; returns their names once the aggregator is done."""
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [f"dev{i:02d}" for i in range(7)]
    (root / "logs").mkdir()
    broker = start_broker(root, names)
    procs = []
    try:
        cfg = write_configs(root, bundle, [dirs[i % len(dirs)] for i in range(7)],
                            broker.port, rounds=2, min_participants=3, names=names,
                            stage_timeout_s=8.0)
        procs += [faulty_agent.spawn(root / "config" / f"{n}.toml", root / "logs" / f"{n}.log",
                                     dump_deltas=True, **faults.get(n, {}))  # type: ignore[arg-type]
                  for n in names]
        wait_connected(root, names)
        procs.append(spawn(["aggregator", "run", "--config", str(cfg)],
                           root / "logs" / "aggregator.log"))
        assert exit_status(procs[-1], root, 300) == 0, logs(root)
    finally:
        stop_all(procs, broker)
    return names


def test_disrupting_devices_are_named_excluded_and_rested(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    names = seven_devices(tmp_path, cohort, logreg_bundle, FAULTS)
    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state)
    honest = names[:5]
    assert [(r["round"], r["status"], r["devices"]) for r in journal] == \
        [(0, "completed", honest), (1, "completed", honest)], logs(tmp_path)
    assert sorted(journal[0]["excluded"]) == ["dev05", "dev06"]
    assert journal[0]["excluded"]["dev05"].startswith("invalid_key: client 5 advertised a mask "
                                                      "key of small order")
    assert journal[0]["excluded"]["dev06"].startswith("bad_shares: client 6 sealed shares to")
    assert journal[1]["excluded"] == {}
    text = (tmp_path / "logs" / "aggregator.log").read_text()
    for device, kind in (("dev05", "invalid_key"), ("dev06", "bad_shares")):
        client = int(device[3:])
        assert f"round 0: {device} (client {client}) excluded for provable disruption " \
               f"({kind})" in text
        assert f"{device} disrupted round 0 ({kind}): left out of rounds for 120 s" in text
    # The round's update is the plain mean of the five others' deltas.
    updates = {n: np.load(tmp_path / "state" / n / "delta-0.npz") for n in honest}
    expect = np.mean([u["delta"] for u in updates.values()], axis=0)
    got = read_model(state, 1).astype(np.float64) - read_model(state, 0)
    np.testing.assert_allclose(got, expect, atol=codec_atol(len(updates)))
    # The neighbours of dev06 accused it; none of them stopped answering.
    accusers = [n for n in honest if "accuses client 6" in
                (tmp_path / "logs" / f"{n}.log").read_text()]
    assert accusers, logs(tmp_path)


def test_a_device_that_reveals_wrong_shares_is_named_and_rested(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    """dev06 answers Unmasking with every share off by one, signed, in every round. Before,
    a round aborted ("shares do not reconstruct") whenever one of its shares was among the t
    the server used, and it was never rested (here, as the last holder, its shares went unused
    and it stayed in every round: the test fails on round 1). Now its shares are set aside
    because the other holders' shares contradict them, the round completes with every input
    (dev06's own is in the sum and its self mask is rebuilt from the others' shares), and dev06
    is excluded by name and rested, so the next round goes on without it."""
    names = seven_devices(tmp_path, cohort, logreg_bundle,
                          {"dev06": {"lie_in_unmasking": True}})
    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state)
    assert [(r["round"], r["status"], r["devices"]) for r in journal] == \
        [(0, "completed", names), (1, "completed", names[:6])], logs(tmp_path)
    assert list(journal[0]["excluded"]) == ["dev06"]
    assert journal[0]["excluded"]["dev06"].startswith(
        "inconsistent: client 6 revealed shares of clients [0, 1, 2, 3, 4, 5] that the other "
        "holders' shares contradict")
    text = (tmp_path / "logs" / "aggregator.log").read_text()
    assert "dev06 disrupted round 0 (inconsistent): left out of rounds for 120 s" in text
    updates = [np.load(tmp_path / "state" / n / "delta-0.npz")["delta"] for n in names]
    got = read_model(state, 1).astype(np.float64) - read_model(state, 0)
    np.testing.assert_allclose(got, np.mean(updates, axis=0), atol=codec_atol(len(updates)))
