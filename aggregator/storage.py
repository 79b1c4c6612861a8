"""What every aggregator store does, whatever database holds it: the shared SQL and rules.

Two backends share this class: SQLite (`store.py`, the embedded default: one file in
`state_dir`) and PostgreSQL (`store_pg.py`, `[store] url`, which also holds the lease of an
active/standby pair). The queries are written once, with `?` parameters; a backend supplies
its connection, `execute` (which translates the parameters), its transactions, the errors it
waits out and the column that keeps the order in which messages were accepted. The service,
the commands that read the state and the tests see only this class.

The rules both keep: one message per device and stage of the round in flight; a round's
messages dropped in the transaction that closes it; a model version stored once, with the
server optimizer's state after it, in the transaction that journals its round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any, TypeVar

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
T = TypeVar("T")


class StoreUnavailable(GenofedError):
    """The state database cannot be opened or written for now (a full disk, a file system
    gone, a database server down), and the service was asked to stop, or is starting: worth
    a restart later."""


class SqlStore:
    """Durable aggregator state on one SQL connection. Not thread-safe: one service loop
    owns it. Subclasses set `where`, `transient`, `hint` and `order`, and implement
    `execute`, `transaction`, `reopen` and `close`."""

    where = ""  # the database, as the logs name it (never a password)
    transient: tuple[type[BaseException], ...] = ()  # errors a retry may get past
    hint = ""  # what a transient error usually means, for the log line
    order = "rowid"  # the column in which the messages table keeps acceptance order
    fence: tuple[str, str, int] | None = None  # a lease holder's (lease, holder, token): PG

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """Run one statement (`?` parameters) on the connection; returns its cursor."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        """All or nothing; nested ones join the outer one."""
        raise NotImplementedError

    def reopen(self) -> None:
        """A fresh connection, after an error that may have broken the old one."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # models
    def put_model(self, version: int, weights: np.ndarray, *,
                  moments: Moments | None = None) -> str:
        """Store model `version` (float32) with the server optimizer's moments after it, if it
        has any (FedAdam's m and v); returns the sha256 of the weights."""
        blob = np.ascontiguousarray(weights, dtype="<f4").tobytes()
        digest = hashlib.sha256(blob).hexdigest()
        kept = None if moments is None else np.concatenate(moments).astype("<f8").tobytes()
        self.execute("INSERT INTO models (version, weights, sha256, created, moments) "
                     "VALUES (?, ?, ?, ?, ?)", (int(version), blob, digest, time.time(), kept))
        return digest

    def moments(self, version: int) -> Moments | None:
        """The server optimizer's moments stored with model `version`, if any."""
        row = self.execute("SELECT moments, length(weights) FROM models WHERE version=?",
                           (int(version),)).fetchone()
        if row is None or row[0] is None:
            return None
        both, n = np.frombuffer(row[0], dtype="<f8").astype(np.float64), row[1] // 4
        if both.size != 2 * n:
            raise LocalInputError(f"{self.where}: model version {version} has optimizer "
                                  f"moments of {both.size} values, not 2 x {n}")
        return both[:n], both[n:]

    def latest_model(self) -> tuple[int, np.ndarray] | None:
        """The newest model version and its weights, verified against its hash."""
        row = self.execute("SELECT version, weights, sha256 FROM models "
                           "ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None
        version, blob, digest = row
        if hashlib.sha256(blob).hexdigest() != digest:
            raise LocalInputError(f"{self.where}: model version {version} fails its hash check")
        return int(version), np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def model(self, version: int) -> np.ndarray:
        row = self.execute("SELECT weights FROM models WHERE version=?",
                           (int(version),)).fetchone()
        if row is None:
            raise LocalInputError(f"{self.where}: no model version {version}")
        return np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    # rounds
    def open_round(self, round_: int, model_version: int, opened: float,
                   task: bytes | None = None) -> None:
        self.execute("INSERT INTO rounds (round, model_version, status, opened, task) "
                     "VALUES (?, ?, 'open', ?, ?)", (int(round_), int(model_version), opened,
                                                     task))

    def set_stage(self, round_: int, stage: str) -> None:
        """Record that `round_` has moved to `stage` (before that stage's messages go out)."""
        self.execute("UPDATE rounds SET stage=? WHERE round=? AND status='open'",
                     (stage, int(round_)))

    def open_round_in_flight(self) -> OpenRound | None:
        """The round left open by a previous run, if any, with its stored messages."""
        row = self.execute("SELECT round, model_version, opened, task, stage FROM rounds "
                           "WHERE status='open' ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None
        round_ = int(row[0])
        stages = sorted(str(r[0]) for r in self.execute(
            "SELECT DISTINCT stage FROM messages WHERE round=?", (round_,)).fetchall())
        return OpenRound(round_, int(row[1]), max(0.0, time.time() - float(row[2])),
                         None if row[3] is None else bytes(row[3]), row[4],
                         {st: tuple(self.messages(round_, st)) for st in stages})

    def next_round(self) -> int:
        row = self.execute("SELECT MAX(round) FROM rounds").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def close_round(self, round_: int, status: str, record: dict[str, Any],
                    new_model: tuple[int, np.ndarray] | None = None,
                    moments: Moments | None = None) -> None:
        """Close a round and, in the same transaction, store the model it produced (with the
        optimizer moments after it)."""
        with self.transaction():
            if new_model is not None:
                self.put_model(*new_model, moments=moments)
            self.execute("UPDATE rounds SET status=?, closed=?, record=? WHERE round=?",
                         (status, time.time(), json.dumps(record), int(round_)))
            self.execute("DELETE FROM messages WHERE round=?", (int(round_),))

    def journal(self) -> list[dict[str, Any]]:
        """The records of all closed rounds, in order."""
        rows = self.execute("SELECT record FROM rounds WHERE record IS NOT NULL "
                            "ORDER BY round").fetchall()
        return [json.loads(r[0]) for r in rows]

    def privacy_spent(self) -> tuple[dict[str, Any], ...]:
        """The privacy ledger: the `privacy` part of each closed round's record that has one
        (`aggregator/privacy.py`), in round order."""
        return tuple(r["privacy"] for r in self.journal() if r.get("privacy"))

    # messages of the round in flight
    def put_message(self, round_: int, stage: str, device: str, payload: bytes) -> bool:
        """Keep one accepted message; False if that device already sent one for the stage."""
        cur = self.execute("INSERT INTO messages (round, stage, device, payload, received) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (int(round_), stage, device, payload, time.time()))
        return bool(cur.rowcount == 1)

    def messages(self, round_: int, stage: str) -> list[tuple[str, bytes]]:
        return [(str(d), bytes(p)) for d, p in self.execute(
            f"SELECT device, payload FROM messages WHERE round=? AND stage=? "
            f"ORDER BY {self.order}", (int(round_), stage)).fetchall()]

    # devices
    def enroll(self, device: str, verify_key: bytes) -> None:
        self.execute("INSERT INTO devices (id, verify_key, enrolled) VALUES (?, ?, ?) "
                     "ON CONFLICT (id) DO UPDATE SET verify_key=excluded.verify_key, "
                     "enrolled=excluded.enrolled", (device, verify_key, time.time()))

    def unenroll(self, device: str) -> bool:
        """Forget a device's key: it is never picked again, and the running service drops
        its messages once it reads the table again. False if it was not enrolled."""
        return bool(self.execute("DELETE FROM devices WHERE id=?", (device,)).rowcount == 1)

    def devices(self) -> dict[str, bytes]:
        return {str(d): bytes(k) for d, k in
                self.execute("SELECT id, verify_key FROM devices").fetchall()}

    # the core's view
    def snapshot(self) -> Snapshot:
        """What the aggregator's core reads back at start (one consistent read)."""
        with self.transaction():
            latest = self.latest_model()
            return Snapshot(model=latest,
                            moments=None if latest is None else self.moments(latest[0]),
                            next_round=self.next_round(),
                            in_flight=self.open_round_in_flight(), enrolled=self.devices(),
                            spent=self.privacy_spent())

    def apply(self, effect: Durable, *, wait: threading.Event | None = None) -> None:
        """Make one of the core's durable effects durable; returns once it is on disk.

        With `wait`, a full disk or a lost database is waited out (retried with a fresh
        connection, saying so every minute) until `wait` is set (then StoreUnavailable):
        nothing after this effect (its acknowledgement, what publishes it) may happen before
        it is on disk, and the broker keeps what is not acknowledged, so waiting loses
        nothing."""
        self.retrying(lambda: self._apply(effect), wait)

    def apply_all(self, effects: list[Durable], *, wait: threading.Event | None = None) -> None:
        """`apply` for a run of effects, all in one transaction (one commit): all or none."""
        def all_of() -> None:
            with self.transaction():
                for e in effects:
                    self._apply(e)

        self.retrying(all_of, wait)

    def retrying(self, action: Callable[[], T], wait: threading.Event | None) -> T:
        """`action()`, retried past this backend's transient errors while `wait` is unset."""
        delay, waited = 1.0, 0.0
        while True:
            try:
                done = action()
            except self.transient as exc:
                if wait is None:
                    raise
                said = " ".join(str(exc).split())  # psycopg's messages span lines
                if wait.is_set():
                    raise StoreUnavailable(f"{self.where}: {said}") from None
                if waited % 60 + delay > 60 or waited == 0:
                    log.error("state database %s: %s; retrying (%s)", self.where, said,
                              self.hint)
                wait.wait(delay)
                waited, delay = waited + delay, min(2 * delay, 30.0)
                self.reopen()
                continue
            if waited:
                log.warning("state database %s written again after %.0f s", self.where, waited)
            return done

    def _apply(self, effect: Durable) -> None:
        with self.transaction():  # the fenced write of a lease holder (store_pg.py)
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

