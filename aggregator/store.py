"""The aggregator's durable state in SQLite, the embedded default: models, rounds, received
messages, devices. The queries and rules are `storage.py`'s, shared with PostgreSQL
(`store_pg.py`); this module opens the file, makes or migrates its tables, and runs them.

One file, WAL journal, `synchronous=FULL`: a transaction that returned is on disk. The service
acknowledges an MQTT message only after the message is stored here, so an update the broker
saw acknowledged survives a crash of the aggregator. A round in flight keeps its sealed task
(its whole SecAgg+ configuration) and the stage it has reached, which is written before that
stage's messages go out; after a restart the service replays the stored messages into a fresh
state machine and resumes the round, or aborts it cleanly. A model version is written with the
server optimizer's state in the same transaction that closes its round, so a published model
always has its round journal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from genofed.aggregator.storage import SqlStore, StoreUnavailable
from genofed.errors import LocalInputError

__all__ = ["SCHEMA_VERSION", "Store", "StoreUnavailable"]

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY, weights BLOB NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, moments BLOB);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, model_version INTEGER NOT NULL, status TEXT NOT NULL,
    opened REAL NOT NULL, closed REAL, record TEXT, task BLOB, stage TEXT);
CREATE TABLE IF NOT EXISTS messages (
    round INTEGER NOT NULL, stage TEXT NOT NULL, device TEXT NOT NULL, payload BLOB NOT NULL,
    received REAL NOT NULL, PRIMARY KEY (round, stage, device));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, verify_key BLOB NOT NULL, enrolled REAL NOT NULL);
"""
# Schema 1 lacked what resuming a round and FedAdam need; its rows stay valid.
_MIGRATE_FROM_1 = """
ALTER TABLE models ADD COLUMN moments BLOB;
ALTER TABLE rounds ADD COLUMN task BLOB;
ALTER TABLE rounds ADD COLUMN stage TEXT;
"""


class Store(SqlStore):
    """Durable aggregator state in one SQLite file. Not thread-safe: one service loop owns
    it."""

    transient = (sqlite3.Error,)
    hint = "a full disk? free space"

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (making it if needed) the state at `path`; `readonly` opens an existing one
        without writing anything to it (no journal mode, no migration), for other commands
        reading a running service's state."""
        self.path, self.where, self._depth = path, str(path), 0
        if readonly:
            self._open_readonly(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.OperationalError as exc:  # the file system, not the file: try later
            raise StoreUnavailable(f"{path}: cannot open the state database: {exc} (a full "
                                   "disk, or a file system gone?)") from None
        except sqlite3.DatabaseError as exc:
            raise LocalInputError(f"{path}: not a usable aggregator state database: {exc}") \
                from None
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) == 1:
            with self.transaction() as db:
                for statement in filter(str.strip, _MIGRATE_FROM_1.split(";")):
                    db.execute(statement)
                db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise LocalInputError(f"{path}: state schema {row[0]}, this version reads "
                                  f"{SCHEMA_VERSION}")

    def _open_readonly(self, path: Path) -> None:
        if not path.is_file():
            raise LocalInputError(f"no aggregator state at {path} (has the aggregator run?)")
        try:
            self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                      isolation_level=None)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LocalInputError(f"{path}: not a usable aggregator state database: {exc}") \
                from None
        if row is None or int(row[0]) not in (1, SCHEMA_VERSION):
            raise LocalInputError(f"{path}: state schema {row and row[0]}, this version reads "
                                  f"{SCHEMA_VERSION}")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing; nested ones join the outer one."""
        if self._depth:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> None:
        """A fresh connection to the same file, after an error that may have broken the old
        one (a full disk, a file system remounted); an open transaction is rolled back."""
        self._depth = 0
        with suppress(sqlite3.Error):
            self.db.close()
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            pass  # the next attempt says what is wrong

