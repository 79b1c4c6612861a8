"""The aggregator's state: atomic round closes, verified models, clear errors, on SQLite and on
a real PostgreSQL server (the tests marked `backend` run on both)."""

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support.disk import fill, tiny_tmpfs

from genofed.aggregator.effects import OpenRound
from genofed.aggregator.storage import SqlStore
from genofed.aggregator.store import Store
from genofed.errors import GenofedError

Opener = Callable[[], SqlStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same store again each call: one SQLite file, or one PostgreSQL database."""
    if request.param == "sqlite":
        return lambda: Store(tmp_path / "a.db")
    from genofed.aggregator.store_pg import PgStore

    url = request.getfixturevalue("pg_url")
    return lambda: PgStore(url)


def test_round_life_cycle_survives_reopen(opener: Opener) -> None:
    s = opener()
    s.put_model(0, np.arange(3, dtype=np.float32))
    s.open_round(0, 0, opened=100.0)
    assert s.put_message(0, "update", "dev00", b"x")
    assert not s.put_message(0, "update", "dev00", b"again")  # one per device and stage
    s.close()
    s = opener()
    flight = s.open_round_in_flight()
    assert flight is not None and (flight.round, flight.model_version) == (0, 0)
    assert s.messages(0, "update") == [("dev00", b"x")]
    s.close_round(0, "completed", {"round": 0}, new_model=(1, np.ones(3, dtype=np.float32)))
    assert s.open_round_in_flight() is None and s.messages(0, "update") == []
    version, w = s.latest_model()  # type: ignore[misc]
    assert version == 1 and w.tolist() == [1, 1, 1]
    assert s.journal() == [{"round": 0}] and s.next_round() == 1


def test_failed_close_changes_nothing(opener: Opener) -> None:
    s = opener()
    s.put_model(0, np.zeros(2, dtype=np.float32))
    s.open_round(0, 0, opened=1.0)
    with pytest.raises(Exception, match=r"(?i)unique"):
        s.close_round(0, "completed", {}, new_model=(0, np.ones(2, dtype=np.float32)))
    assert s.open_round_in_flight() is not None  # the round is still open, model 0 intact
    assert s.latest_model()[1].tolist() == [0, 0]  # type: ignore[index]


def test_tampered_model(opener: Opener) -> None:
    s = opener()
    s.put_model(0, np.zeros(2, dtype=np.float32))
    s.execute("UPDATE models SET weights=? WHERE version=0", (np.ones(2, dtype="<f4").tobytes(),))
    with pytest.raises(GenofedError, match="hash check"):
        s.latest_model()


def test_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GenofedError, match=r"junk\.db"):
        Store(bad)


def test_round_in_flight_keeps_its_task_and_stage(opener: Opener) -> None:
    s = opener()
    s.put_model(0, np.zeros(2, dtype=np.float32))
    s.open_round(0, 0, opened=time.time() - 5.0, task=b"sealed task")
    s.put_message(0, "ADVERTISE_KEYS", "dev01", b"b")
    s.put_message(0, "ADVERTISE_KEYS", "dev00", b"a")
    s.set_stage(0, "SHARE_KEYS")
    s.close()
    s = opener()
    left = s.open_round_in_flight()
    assert left is not None and 5.0 <= left.age_s < 60.0
    # Replayed in the order they were accepted, which the round's messages depend on.
    assert left == OpenRound(0, 0, left.age_s, b"sealed task", "SHARE_KEYS",
                             {"ADVERTISE_KEYS": (("dev01", b"b"), ("dev00", b"a"))})
    again = s.snapshot().in_flight
    assert again is not None and again.messages == left.messages


def test_optimizer_moments_are_stored_with_their_model(opener: Opener) -> None:
    s = opener()
    s.put_model(0, np.zeros(3, dtype=np.float32))
    assert s.moments(0) is None  # FedAvg, or before the first FedAdam step
    s.open_round(0, 0, opened=1.0)
    m, v = np.array([0.1, -0.2, 0.3]), np.array([1e-4, 2e-4, 3e-4])
    s.close_round(0, "completed", {}, new_model=(1, np.ones(3, dtype=np.float32)),
                  moments=(m, v))
    s.close()
    got = opener().moments(1)
    assert got is not None
    np.testing.assert_array_equal(got[0], m)
    np.testing.assert_array_equal(got[1], v)


def test_schema_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the tables as the first release wrote them
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '1');
            CREATE TABLE models (version INTEGER PRIMARY KEY, weights BLOB NOT NULL,
                sha256 TEXT NOT NULL, created REAL NOT NULL);
            CREATE TABLE rounds (round INTEGER PRIMARY KEY, model_version INTEGER NOT NULL,
                status TEXT NOT NULL, opened REAL NOT NULL, closed REAL, record TEXT);
            INSERT INTO rounds VALUES (0, 0, 'open', 2.0, NULL, NULL);""")
    s = Store(path)
    s.put_model(0, np.zeros(2, dtype=np.float32))
    left = s.open_round_in_flight()
    assert left is not None and (left.round, left.task, left.stage) == (0, None, None)
    assert s.moments(0) is None
    s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("2",)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='9' WHERE key='schema'")
    with pytest.raises(GenofedError, match="state schema 9"):
        Store(path)


def test_readonly_store_reads_without_writing(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    s.put_model(0, np.arange(3, dtype=np.float32))
    s.close()
    before = (tmp_path / "a.db").read_bytes()
    r = Store(tmp_path / "a.db", readonly=True)
    assert r.latest_model()[0] == 0 and r.journal() == []  # type: ignore[index]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        r.put_model(1, np.zeros(3, dtype=np.float32))
    r.close()
    # (SQLite may add the WAL index files beside it, as any reader of a WAL database does.)
    assert (tmp_path / "a.db").read_bytes() == before
    with pytest.raises(GenofedError, match="no aggregator state"):
        Store(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "tiny") as mnt:
        yield mnt


def test_full_disk_is_waited_out_and_nothing_is_lost(tiny_disk: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from genofed.aggregator.effects import StoreMessage
    from genofed.aggregator.store import StoreUnavailable

    s = Store(tiny_disk / "a.db")
    s.put_model(0, np.zeros(8, dtype=np.float32))
    s.open_round(0, 0, opened=1.0)
    s.close()
    filler = tiny_disk / "filler"
    stop, opened, full = threading.Event(), threading.Event(), threading.Event()
    effect = StoreMessage(0, "ADVERTISE_KEYS", "dev00", b"m" * 65536)

    def service() -> None:  # the thread that owns the store, as the service's loop does
        store = Store(tiny_disk / "a.db")
        opened.set()
        full.wait()
        store.apply(effect, wait=stop)
        store.close()

    writer = threading.Thread(target=service)
    writer.start()
    assert opened.wait(10)
    fill(filler)  # the disk fills up while the service runs
    full.set()
    writer.join(2.5)
    assert writer.is_alive()  # waiting, not failed
    assert "full" in caplog.text and "retrying" in caplog.text
    filler.unlink()  # the operator frees space
    writer.join(60)
    assert not writer.is_alive()
    s = Store(tiny_disk / "a.db")
    assert s.messages(0, "ADVERTISE_KEYS") == [("dev00", b"m" * 65536)]
    # Asked to stop while the disk is full: one clear error, nothing half written.
    fill(filler)
    stop.set()
    with pytest.raises(StoreUnavailable, match="full"):
        s.apply(StoreMessage(0, "ADVERTISE_KEYS", "dev01", b"n" * 65536), wait=stop)
    s.reopen()
    assert [d for d, _ in s.messages(0, "ADVERTISE_KEYS")] == ["dev00"]
    s.close()
