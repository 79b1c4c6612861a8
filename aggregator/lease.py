"""Who of an active and a standby aggregator is active: a lease in their PostgreSQL database.

One row per federation in the table `lease` (`store_pg.py`): holder, fencing token, expiry.
Times are the database server's (`now()`), so the two machines' clocks do not matter. A
standby tries every quarter lease to take a lease that has expired, which bumps the token; the
holder renews every quarter lease on a connection of its own (a thread), so a service loop
busy unmasking a large round does not lose it. Why a row and not an advisory lock: an
advisory lock lives as long as its session, and a session outlives its client where the
server does not notice the client's machine is gone (TCP with no keepalive answer); a lease
expires on the server's clock, and its token fences the store.

Safety does not rest on timing. Every durable write of the holder checks its token in the
same transaction, under a share lock on the row (`PgStore.transaction`): once another took
the lease, the old holder cannot store a message, a stage or a model, and since nothing is
published before it is stored, it cannot publish a new model version; the version is the
models table's primary key besides. Liveness does: the holder counts its lease from before it
asked for it, so it believes it holds the lease no longer than the server grants it; when a
renewal has not succeeded by then (its connection cut, its server gone) it calls `on_lost`,
and the service stops publishing and exits (status 75) for its supervisor to start it again,
as a standby.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from genofed.aggregator.store_pg import connect, describe

log = logging.getLogger(__name__)
_TAKE = """
INSERT INTO lease (name, holder, token, expires)
VALUES (%(name)s, %(holder)s, 1, now() + %(ttl)s * interval '1 second')
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = lease.token + 1,
    expires = excluded.expires
WHERE lease.expires < now()
RETURNING token"""
_RENEW = """
UPDATE lease SET expires = now() + %(ttl)s * interval '1 second'
WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s RETURNING token"""


def holder_id() -> str:
    """This process, as the lease names it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """The lease of aggregator `name` (the federation) for `holder`, `ttl_s` long."""

    def __init__(self, url: str, name: str, ttl_s: float, holder: str | None = None) -> None:
        self.url, self.where, self.name, self.ttl = url, describe(url), name, ttl_s
        self.holder = holder or holder_id()
        self.token = 0
        self.deadline = 0.0  # time.monotonic() until which this process may act as holder
        self.lost = threading.Event()
        self._db: Any = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    @property
    def fence(self) -> tuple[str, str, int]:
        """What the store checks in each transaction (`PgStore.fence`)."""
        return self.name, self.holder, self.token

    def held(self) -> bool:
        return self.token > 0 and not self.lost.is_set() and time.monotonic() < self.deadline

    def _query(self, sql: str) -> int | None:
        """One statement on the lease's own connection; the token it returned, if any."""
        if self._db is None or self._db.closed:
            self._db = connect(self.url, application_name=f"genofed-lease-{self.holder}")
        row = self._db.execute(sql, {"name": self.name, "holder": self.holder,
                                     "ttl": self.ttl, "token": self.token}).fetchone()
        return None if row is None else int(row[0])

    def acquire(self, stop: threading.Event) -> bool:
        """Wait as the standby until this process holds the lease (True) or `stop` (False)."""
        said = ""
        while not stop.is_set():
            asked = time.monotonic()
            try:
                token = self._query(_TAKE)
            except Exception as exc:  # psycopg's errors; the connection is made again
                self._drop()
                token, now = None, f"database {self.where} unreachable: " \
                                   f"{' '.join(str(exc).split())}"
            else:
                now = "" if token else self._holder_now()
            if token:
                self.token, self.deadline = token, asked + self.ttl
                log.info("active: took the lease %r (token %d, %.0f s)", self.name, token,
                         self.ttl)
                return True
            if now != said:
                log.info("standby: %s", now)
                said = now
            stop.wait(self.ttl / 4)
        return False

    def _holder_now(self) -> str:
        try:
            row = self._db.execute("SELECT holder, token, expires - now() FROM lease "
                                   "WHERE name=%s", (self.name,)).fetchone()
        except Exception:
            return "lease state unknown"
        return "no lease yet" if row is None else \
            f"the lease {self.name!r} is held by {row[0]} (token {row[1]})"

    def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew the lease from a thread until `release`; `on_lost(why)` once it is lost."""
        self._thread = threading.Thread(target=self._renew, args=(on_lost,), daemon=True,
                                        name="lease")
        self._thread.start()

    def _renew(self, on_lost: Callable[[str], None]) -> None:
        while not self._done.wait(max(0.0, min(self.ttl / 4,
                                               self.deadline - time.monotonic()))):
            asked = time.monotonic()
            why = ""
            try:
                if self._query(_RENEW) is None:
                    why = f"the lease {self.name!r} was taken over: {self._holder_now()}"
                else:
                    self.deadline = asked + self.ttl
            except Exception as exc:
                self._drop()
                if time.monotonic() >= self.deadline:
                    why = f"the lease {self.name!r} ran out: database {self.where} " \
                          f"unreachable: {' '.join(str(exc).split())}"
            if not why and time.monotonic() >= self.deadline:
                why = f"the lease {self.name!r} ran out before it was renewed"
            if why:
                self.lost.set()
                log.error("lost the lease: %s; stopping (no more writes or publications)", why)
                on_lost(why)
                return

    def release(self) -> None:
        """Stop renewing and, if still held, give the lease up now (a clean stop): the
        standby takes over at its next try instead of after the lease."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.held():
            with suppress(Exception):
                self._query("UPDATE lease SET expires = now() WHERE name = %(name)s AND "
                            "holder = %(holder)s AND token = %(token)s RETURNING token")
        self.token = 0
        self._drop()

    def _drop(self) -> None:
        if self._db is not None:
            with suppress(Exception):
                self._db.close()
        self._db = None
