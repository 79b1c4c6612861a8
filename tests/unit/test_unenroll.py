"""Un-enrolling a device (`genofed aggregator unenroll`, `broker revoke-device
--aggregator-config`): the store forgets its key, and an aggregator that reads the device
table again drops the device's messages, mid-round too; the round completes without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.simfed import MODEL, config, update

from genofed.aggregator.effects import Count, Ticked
from genofed.aggregator.simulate import Simulation, devices, seeded
from genofed.aggregator.state import enroll_device, state_path, unenroll_device
from genofed.aggregator.store import Store
from genofed.cli.main import main
from genofed.errors import LocalInputError
from genofed.protocol.secagg import SigningIdentity


def test_unenroll_forgets_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = SigningIdentity.generate().public.raw.hex()
    enroll_device(tmp_path, "dev00", key)
    enroll_device(tmp_path, "dev01", key)
    unenroll_device(tmp_path, "dev00")
    store = Store(state_path(tmp_path))
    assert list(store.devices()) == ["dev01"]
    store.close()
    with pytest.raises(LocalInputError, match="not enrolled"):
        unenroll_device(tmp_path, "dev00")
    with pytest.raises(LocalInputError, match="no aggregator state"):
        unenroll_device(tmp_path / "none", "dev00")
    (tmp_path / "agg.toml").write_text(f'federation = "x"\nbundle = "b"\n'
                                       f'state_dir = "{tmp_path}"\n')
    assert main(["aggregator", "unenroll", "--config", str(tmp_path / "agg.toml"),
                 "--device", "dev01"]) == 0
    assert main(["aggregator", "unenroll", "--config", str(tmp_path / "agg.toml"),
                 "--device", "dev01"]) == 1
    assert "not enrolled" in capsys.readouterr().err


def test_a_device_unenrolled_mid_round_is_dropped_and_the_round_completes() -> None:
    # Five devices; while dev004 trains in round 0 it is un-enrolled and the aggregator reads
    # its device table (the service does every second): dev004's advertisement, and anything
    # after, is dropped as not enrolled; rounds 0 and 1 complete with the other four.
    sim: Simulation

    def trains(device: str, round_: int, weights: np.ndarray) -> tuple[np.ndarray, int]:
        if device == "dev004" and round_ == 0:
            del sim.store.devices["dev004"]
            sim._apply(sim.core.handle(Ticked(sim.now, dict(sim.store.devices))))
        return update(device, round_, weights)

    sim = Simulation(config(2, min_participants=4), MODEL, devices(5, trains), seeded(5))
    sim.run()
    records = [j.record for j in sim.journal]
    assert [(r.status, r.devices) for r in records] == [
        ("completed", ("dev000", "dev001", "dev002", "dev003"))] * 2
    assert records[0].cohort == 5 and records[1].cohort == 4  # picked before, not after
    dropped = [c for c in sim.log if isinstance(c, Count) and c.metric == "rejected"]
    assert [c.label for c in dropped] == ["not_enrolled"]
