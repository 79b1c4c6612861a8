"""The aggregator's SQLite state: atomic round closes, verified models, clear errors."""

from pathlib import Path

import numpy as np
import pytest

from genofed.broker.store import Store
from genofed.errors import GenofedError


def test_round_life_cycle_survives_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    s.put_model(0, np.arange(3, dtype=np.float32))
    s.open_round(0, 0, opened=100.0)
    assert s.put_message(0, "update", "dev00", b"x")
    assert not s.put_message(0, "update", "dev00", b"again")  # one per device and stage
    s.close()
    s = Store(tmp_path / "a.db")
    flight = s.open_round_in_flight()
    assert flight is not None and (flight.round, flight.model_version) == (0, 0)
    assert s.messages(0, "update") == [("dev00", b"x")]
    s.close_round(0, "completed", {"round": 0}, new_model=(1, np.ones(3, dtype=np.float32)))
    assert s.open_round_in_flight() is None and s.messages(0, "update") == []
    version, w = s.latest_model()  # type: ignore[misc]
    assert version == 1 and w.tolist() == [1, 1, 1]
    assert s.journal() == [{"round": 0}] and s.next_round() == 1


def test_failed_close_changes_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    s.put_model(0, np.zeros(2, dtype=np.float32))
    s.open_round(0, 0, opened=1.0)
    with pytest.raises(Exception, match="UNIQUE"):
        s.close_round(0, "completed", {}, new_model=(0, np.ones(2, dtype=np.float32)))
    assert s.open_round_in_flight() is not None  # the round is still open, model 0 intact
    assert s.latest_model()[1].tolist() == [0, 0]  # type: ignore[index]


def test_tampered_model_and_bad_file(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    s.put_model(0, np.zeros(2, dtype=np.float32))
    s.db.execute("UPDATE models SET weights=? WHERE version=0",
                 (np.ones(2, dtype="<f4").tobytes(),))
    with pytest.raises(GenofedError, match="hash check"):
        s.latest_model()
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GenofedError, match=r"junk\.db"):
        Store(bad)
