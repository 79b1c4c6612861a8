"""The aggregator's durable state in SQLite: models, rounds, received messages, devices.

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

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from genofed.aggregator.effects import (
    Durable,
    Journal,
    Moments,
    OpenRound,
    Snapshot,
    StoreMessage,
    StoreModel,
    StoreRound,
    StoreStage,
)
from genofed.errors import GenofedError, LocalInputError

log = logging.getLogger(__name__)
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

class StoreUnavailable(GenofedError):
    """The state database cannot be opened or written for now (a full disk, a file system
    gone), and the service was asked to stop, or is starting: worth a restart later."""


class Store:
    """Durable aggregator state. Not thread-safe: one service loop owns it."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (making it if needed) the state at `path`; `readonly` opens an existing one
        without writing anything to it (no journal mode, no migration), for other commands
        reading a running service's state."""
        self.path = path
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

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> None:
        """A fresh connection to the same file, after an error that may have broken the old
        one (a full disk, a file system remounted); an open transaction is rolled back."""
        with suppress(sqlite3.Error):
            self.db.close()
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            pass  # the next attempt says what is wrong

    # models
    def put_model(self, version: int, weights: np.ndarray, *, moments: Moments | None = None,
                  db: sqlite3.Connection | None = None) -> str:
        """Store model `version` (float32) with the server optimizer's moments after it, if it
        has any (FedAdam's m and v); returns the sha256 of the weights."""
        blob = np.ascontiguousarray(weights, dtype="<f4").tobytes()
        digest = hashlib.sha256(blob).hexdigest()
        kept = None if moments is None else np.concatenate(moments).astype("<f8").tobytes()
        (db or self.db).execute("INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                                (version, blob, digest, time.time(), kept))
        return digest

    def moments(self, version: int) -> Moments | None:
        """The server optimizer's moments stored with model `version`, if any."""
        row = self.db.execute("SELECT moments, length(weights) FROM models WHERE version=?",
                              (version,)).fetchone()
        if row is None or row[0] is None:
            return None
        both, n = np.frombuffer(row[0], dtype="<f8").astype(np.float64), row[1] // 4
        if both.size != 2 * n:
            raise LocalInputError(f"{self.path}: model version {version} has optimizer moments "
                                  f"of {both.size} values, not 2 x {n}")
        return both[:n], both[n:]

    def latest_model(self) -> tuple[int, np.ndarray] | None:
        """The newest model version and its weights, verified against its hash."""
        row = self.db.execute("SELECT version, weights, sha256 FROM models "
                              "ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None
        version, blob, digest = row
        if hashlib.sha256(blob).hexdigest() != digest:
            raise LocalInputError(f"{self.path}: model version {version} fails its hash check")
        return int(version), np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def model(self, version: int) -> np.ndarray:
        row = self.db.execute("SELECT weights FROM models WHERE version=?",
                              (version,)).fetchone()
        if row is None:
            raise LocalInputError(f"{self.path}: no model version {version}")
        return np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    # rounds
    def open_round(self, round_: int, model_version: int, opened: float,
                   task: bytes | None = None) -> None:
        self.db.execute("INSERT INTO rounds (round, model_version, status, opened, task) "
                        "VALUES (?, ?, 'open', ?, ?)", (round_, model_version, opened, task))

    def set_stage(self, round_: int, stage: str) -> None:
        """Record that `round_` has moved to `stage` (before that stage's messages go out)."""
        self.db.execute("UPDATE rounds SET stage=? WHERE round=? AND status='open'",
                        (stage, round_))

    def open_round_in_flight(self) -> OpenRound | None:
        """The round left open by a previous run, if any, with its stored messages."""
        row = self.db.execute("SELECT round, model_version, opened, task, stage FROM rounds "
                              "WHERE status='open' ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        round_ = int(row[0])
        stages = [str(r[0]) for r in self.db.execute(
            "SELECT DISTINCT stage FROM messages WHERE round=?", (round_,))]
        return OpenRound(round_, int(row[1]), max(0.0, time.time() - float(row[2])),
                         None if row[3] is None else bytes(row[3]), row[4],
                         {st: tuple(self.messages(round_, st)) for st in stages})

    def next_round(self) -> int:
        row = self.db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def close_round(self, round_: int, status: str, record: dict[str, Any],
                    new_model: tuple[int, np.ndarray] | None = None,
                    moments: Moments | None = None) -> None:
        """Close a round and, in the same transaction, store the model it produced (with the
        optimizer moments after it)."""
        with self.transaction() as db:
            if new_model is not None:
                self.put_model(*new_model, moments=moments, db=db)
            db.execute("UPDATE rounds SET status=?, closed=?, record=? WHERE round=?",
                       (status, time.time(), json.dumps(record), round_))
            db.execute("DELETE FROM messages WHERE round=?", (round_,))

    def journal(self) -> list[dict[str, Any]]:
        """The records of all closed rounds, in order."""
        rows = self.db.execute("SELECT record FROM rounds WHERE record IS NOT NULL "
                               "ORDER BY round").fetchall()
        return [json.loads(r[0]) for r in rows]

    # messages of the round in flight
    def put_message(self, round_: int, stage: str, device: str, payload: bytes) -> bool:
        """Keep one accepted message; False if that device already sent one for the stage."""
        cur = self.db.execute("INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?)",
                              (round_, stage, device, payload, time.time()))
        return cur.rowcount == 1

    def messages(self, round_: int, stage: str) -> list[tuple[str, bytes]]:
        return [(str(d), bytes(p)) for d, p in self.db.execute(
            "SELECT device, payload FROM messages WHERE round=? AND stage=? ORDER BY rowid",
            (round_, stage))]

    # the core's view
    def snapshot(self) -> Snapshot:
        """What the aggregator's core reads back at start."""
        latest = self.latest_model()
        return Snapshot(model=latest,
                        moments=None if latest is None else self.moments(latest[0]),
                        next_round=self.next_round(), in_flight=self.open_round_in_flight(),
                        enrolled=self.devices())

    def apply(self, effect: Durable, *, wait: threading.Event | None = None) -> None:
        """Make one of the core's durable effects durable; returns once it is on disk.

        With `wait`, a full disk or a lost database is waited out (retried with a fresh
        connection, saying so every minute) until `wait` is set (then StoreUnavailable):
        nothing after this effect (its acknowledgement, what publishes it) may happen before
        it is on disk, and the broker keeps what is not acknowledged, so waiting loses
        nothing."""
        delay, waited = 1.0, 0.0
        while True:
            try:
                self._apply(effect)
            except sqlite3.Error as exc:
                if wait is None:
                    raise
                if wait.is_set():
                    raise StoreUnavailable(f"{self.path}: {exc}") from None
                if waited % 60 + delay > 60 or waited == 0:
                    log.error("state database %s: %s; retrying (a full disk? free space)",
                              self.path, exc)
                wait.wait(delay)
                waited, delay = waited + delay, min(2 * delay, 30.0)
                self.reopen()
                continue
            if waited:
                log.warning("state database %s written again after %.0f s", self.path, waited)
            return

    def _apply(self, effect: Durable) -> None:
        if isinstance(effect, StoreMessage):
            self.put_message(effect.round, effect.stage, effect.device, effect.payload)
        elif isinstance(effect, StoreStage):
            self.set_stage(effect.round, effect.stage)
        elif isinstance(effect, StoreRound):
            self.open_round(effect.round, effect.model_version, time.time(), effect.task)
        elif isinstance(effect, Journal):
            rec = effect.record
            self.close_round(rec.round, rec.status, asdict(rec), new_model=effect.model,
                             moments=effect.moments)
        elif isinstance(effect, StoreModel):
            self.put_model(effect.version, effect.weights)
        else:
            raise TypeError(f"not a durable effect: {effect!r}")

    # devices
    def enroll(self, device: str, verify_key: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?)",
                        (device, verify_key, time.time()))

    def unenroll(self, device: str) -> bool:
        """Forget a device's key: it is never picked again, and the running service drops
        its messages once it reads the table again. False if it was not enrolled."""
        return self.db.execute("DELETE FROM devices WHERE id=?", (device,)).rowcount == 1

    def devices(self) -> dict[str, bytes]:
        return {str(d): bytes(k) for d, k in self.db.execute("SELECT id, verify_key FROM devices")}
