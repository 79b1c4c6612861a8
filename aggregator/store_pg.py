"""The aggregator's durable state in PostgreSQL (psycopg 3): `[store] url = "postgresql://..."`.

The same tables, queries and rules as SQLite (`storage.py`), for a deployment whose state
must outlive the aggregator's machine: a PostgreSQL server (replicated, backed up, as the
operator runs it) and an active and a standby aggregator on it (`lease.py`). A transaction
that returned is committed on the server (`synchronous_commit` as the server has it, on by
default).

Fencing: once this store belongs to a lease holder (`fence`), every transaction first checks,
under a share lock on the lease row, that the holder and its token are still the lease's; a
write by an aggregator whose lease was taken over fails with `LeaseLost` and changes
nothing, and a takeover waits for a write that holds the lock to commit. So the new holder
reads back everything the old one committed, and nothing after.

A lost connection (the server restarted, the network cut) is waited out as SQLite's full disk
is: the same `apply(effect, wait=...)`, a fresh connection per attempt, one log line a minute.
TCP keepalives and a user timeout make a vanished server an error within seconds, not hours.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from genofed.aggregator.storage import SqlStore, StoreUnavailable
from genofed.errors import GenofedError, LocalInputError

try:  # the coordinator extra; SQLite needs none of it
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - depends on the install
    psycopg = None  # type: ignore[assignment]
    _MISSING = str(exc)

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    version BIGINT PRIMARY KEY, weights BYTEA NOT NULL, sha256 TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, moments BYTEA);
CREATE TABLE IF NOT EXISTS rounds (
    round BIGINT PRIMARY KEY, model_version BIGINT NOT NULL, status TEXT NOT NULL,
    opened DOUBLE PRECISION NOT NULL, closed DOUBLE PRECISION, record TEXT, task BYTEA,
    stage TEXT);
CREATE TABLE IF NOT EXISTS messages (
    seq BIGSERIAL, round BIGINT NOT NULL, stage TEXT NOT NULL, device TEXT NOT NULL,
    payload BYTEA NOT NULL, received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (round, stage, device));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, verify_key BYTEA NOT NULL, enrolled DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS lease (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL,
    expires TIMESTAMPTZ NOT NULL);
"""
_SCHEMA_LOCK = 0x67656E6F  # an advisory lock id ("geno"): two aggregators starting at once
# libpq: a server that vanished (its machine gone) is an error within seconds.
_LIVENESS: dict[str, Any] = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
             "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10000}


class LeaseLost(GenofedError):
    """This aggregator no longer holds the lease: another one is active, and this one's
    writes are refused. It must stop publishing at once."""


def describe(url: str) -> str:
    """The database a URL names, as logs may show it (no password)."""
    if psycopg is None:
        return url.split("@")[-1]
    try:
        p = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise LocalInputError(f"[store] url: not a PostgreSQL URL: {exc}") from None
    host = p.get("host") or "localhost"
    return f"postgresql://{p.get('user') or ''}@{host}:{p.get('port') or 5432}/" \
           f"{p.get('dbname') or ''}"


def connect(url: str, **options: Any) -> Any:
    """A psycopg connection in autocommit mode (transactions are explicit)."""
    if psycopg is None:
        raise LocalInputError(f"[store] url {url.split('@')[-1]}: PostgreSQL needs psycopg 3 "
                              f"and libpq (pip install 'genofed[coordinator]'; apt libpq5): "
                              f"{_MISSING}")
    return psycopg.connect(url, autocommit=True, **_LIVENESS, **options)


class PgStore(SqlStore):
    """Durable aggregator state in a PostgreSQL database. Not thread-safe: one service loop
    owns it."""

    hint = "the database server down or unreachable?"
    order = "seq"
    db: Any  # a psycopg.Connection

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        """Connect (making the tables if needed); `readonly` only reads, for other commands
        reading a running service's state. A server that cannot be reached now raises
        StoreUnavailable (the service opens it through `retrying` to wait it out)."""
        self.url, self.where, self.readonly = url, describe(url), readonly
        self.transient = (psycopg.OperationalError, psycopg.InterfaceError)
        self._depth = 0
        try:
            self._connect()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.where}: cannot connect: "
                                   f"{' '.join(str(exc).split())}") from None
        row = self.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
        if readonly and not row[0]:
            raise LocalInputError(f"no aggregator state at {self.where} (has the aggregator "
                                  "run?)")
        if not readonly:
            with self.db.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self.db.execute(_SCHEMA)
                self.db.execute("INSERT INTO meta VALUES ('schema', %s) ON CONFLICT DO "
                                "NOTHING", (str(SCHEMA_VERSION),))
        got = self.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if got is None or int(got[0]) != SCHEMA_VERSION:
            raise LocalInputError(f"{self.where}: state schema {got and got[0]}, this version "
                                  f"reads {SCHEMA_VERSION}")

    def _connect(self) -> None:
        options = "-c default_transaction_read_only=on" if self.readonly else ""
        self.db = connect(self.url, **({"options": options} if options else {}))

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(sql.replace("?", "%s"), params)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """All or nothing; nested ones join the outer one. A lease holder's transaction is
        fenced: it fails with LeaseLost, changing nothing, once another holds the lease."""
        if self._depth:
            yield self.db
            return
        self._depth = 1
        try:
            with self.db.transaction():
                if self.fence is not None:
                    self._check_fence(*self.fence)
                yield self.db
        finally:
            self._depth = 0

    def _check_fence(self, name: str, holder: str, token: int) -> None:
        row = self.db.execute("SELECT holder, token FROM lease WHERE name=%s FOR SHARE",
                              (name,)).fetchone()
        if row is None or (row[0], int(row[1])) != (holder, token):
            now = "nobody" if row is None else f"{row[0]} (token {row[1]})"
            raise LeaseLost(f"lease {name!r} lost: held by {now}, not by {holder} "
                            f"(token {token}); this aggregator must not write or publish")

    def close(self) -> None:
        with suppress(psycopg.Error):
            self.db.close()

    def reopen(self) -> None:
        """A fresh connection, after an error that may have broken the old one (the server
        restarted, the network cut); an open transaction is rolled back by the server."""
        self._depth = 0
        self.close()
        with suppress(psycopg.Error):
            self._connect()  # on failure the next attempt says what is wrong
