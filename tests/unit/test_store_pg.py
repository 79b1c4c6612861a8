"""The aggregator's store on a real PostgreSQL server: a lost server waited out, the lease of
an active/standby pair, and the fencing that refuses a stale holder's writes."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from support.postgres import PgServer

from genofed.aggregator.effects import StoreMessage
from genofed.aggregator.storage import StoreUnavailable

psycopg = pytest.importorskip("psycopg")
from genofed.aggregator.lease import Lease  # noqa: E402
from genofed.aggregator.store_pg import LeaseLost, PgStore  # noqa: E402

TTL_S = 2.0


def test_lost_server_is_waited_out_and_nothing_is_lost(
        pg_server: PgServer, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    s = PgStore(pg_url)
    s.put_model(0, np.zeros(4, dtype=np.float32))
    s.open_round(0, 0, opened=1.0)
    pg_server.stop("immediate")  # a crash: the connection is cut mid-session
    stop, done = threading.Event(), threading.Event()
    effect = StoreMessage(0, "ADVERTISE_KEYS", "dev00", b"advert")
    caplog.set_level(logging.INFO)

    def service() -> None:
        s.apply(effect, wait=stop)
        done.set()

    writer = threading.Thread(target=service)
    writer.start()
    try:
        assert not done.wait(2.5)  # waiting, not failed
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(lines) == 1 and "\n" not in lines[0], lines  # one line, not one a retry
        assert lines[0].startswith("state database postgresql://genofed@127.0.0.1:")
        assert "retrying (the database server down or unreachable?)" in lines[0]
    finally:
        pg_server.start()  # the operator brings it back
    writer.join(60)
    assert done.is_set()
    assert "written again after" in caplog.text
    assert PgStore(pg_url).messages(0, "ADVERTISE_KEYS") == [("dev00", b"advert")]
    # Asked to stop while the server is away: one clear error, nothing written.
    pg_server.stop("immediate")
    try:
        stop.set()
        with pytest.raises(StoreUnavailable, match="postgresql://"):
            s.apply(StoreMessage(0, "ADVERTISE_KEYS", "dev01", b"x"), wait=stop)
    finally:
        pg_server.start()
    assert [d for d, _ in PgStore(pg_url).messages(0, "ADVERTISE_KEYS")] == ["dev00"]


def test_readonly_store_and_unreachable_server(pg_server: PgServer, pg_url: str) -> None:
    from genofed.errors import LocalInputError

    with pytest.raises(LocalInputError, match="no aggregator state at postgresql://"):
        PgStore(pg_url, readonly=True)
    s = PgStore(pg_url)
    s.enroll("dev00", b"k" * 32)
    s.enroll("dev00", b"j" * 32)  # enrolled again: the new key
    assert s.devices() == {"dev00": b"j" * 32}
    r = PgStore(pg_url, readonly=True)
    assert r.journal() == [] and r.devices() == {"dev00": b"j" * 32}
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        r.put_model(0, np.zeros(2, dtype=np.float32))
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        PgStore(pg_url.replace(str(pg_server.port), "1"))


def test_one_holder_at_a_time_and_a_stale_holder_is_fenced(pg_url: str) -> None:
    store_a, store_b = PgStore(pg_url), PgStore(pg_url)
    a = Lease(pg_url, "demo", TTL_S, holder="a")
    b = Lease(pg_url, "demo", TTL_S, holder="b")
    never = threading.Event()
    assert a.acquire(never) and a.token == 1
    store_a.fence = a.fence
    store_a.open_round(0, 0, opened=1.0)
    store_a.apply(StoreMessage(0, "ADVERTISE_KEYS", "dev00", b"a"))
    # A renews while B waits as the standby: B never gets it.
    a.keep(lambda why: None)
    stop_b = threading.Event()
    threading.Timer(2.5 * TTL_S, stop_b.set).start()
    assert not b.acquire(stop_b)
    # A's machine is gone: no more renewals. B takes the lease once it expired...
    a._done.set()
    assert b.acquire(never) and b.token == 2
    store_b.fence = b.fence
    # ... and A's writes are refused from then on, changing nothing.
    with pytest.raises(LeaseLost, match=r"held by b \(token 2\), not by a \(token 1\)"):
        store_a.apply(StoreMessage(0, "ADVERTISE_KEYS", "dev01", b"late"))
    store_b.apply(StoreMessage(0, "ADVERTISE_KEYS", "dev02", b"b"))
    assert [d for d, _ in store_b.messages(0, "ADVERTISE_KEYS")] == ["dev00", "dev02"]
    b.release()  # a clean stop gives the lease up at once
    assert a.acquire(never) and a.token == 3


def test_holder_whose_connection_is_cut_stops_before_the_standby_starts(
        pg_server: PgServer, pg_url: str) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.url(dbname), autocommit=True) as admin:
        admin.execute("CREATE ROLE agg_a LOGIN SUPERUSER")
        url_a = pg_url.replace("genofed@", "agg_a@")
        PgStore(url_a)
        a = Lease(url_a, "demo", TTL_S, holder="a")
        assert a.acquire(threading.Event())
        lost: list[str] = []
        a.keep(lost.append)
        # A's database connections are cut, and stay cut.
        admin.execute("ALTER ROLE agg_a NOLOGIN")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE usename = 'agg_a'")
        b = Lease(pg_url, "demo", TTL_S, holder="b")
        assert b.acquire(threading.Event())
        # A knew it had lost the lease before B could take it: its deadline, counted from
        # before each renewal it asked for, is never later than the server's expiry.
        assert not a.held()
        assert a.lost.wait(10) and len(lost) == 1 and "unreachable" in lost[0], lost
