"""`genofed aggregator run`: the aggregator's I/O shell around its core.

The core (`core.py`) decides everything; this shell feeds it events and does what it says,
effect by effect, in the order given: durable effects into its store (SQLite, `store.py`, or
PostgreSQL, `store_pg.py`), then the
acknowledgements and publications that depend on them over MQTT (`transport/mqtt.py`), and
counts into Prometheus (`metrics.py`). Events: every delivery from the broker, a clock tick
at least every 0.1 s, and the store read back once at start.

Bad local input (config, bundle, stored state) stops it before it connects, with one line;
bad network input is the core's to log, count and drop. State lives in `state_dir`
(`state.py`); a crash loses no acknowledged message and no journaled round, because nothing
is acknowledged or published before what it depends on is on disk.

On PostgreSQL, aggregators of one federation take turns under a lease (`lease.py`): one
waits as the standby, neither connected to the broker nor writing, until it holds the lease;
then it reads the store back, as a restarted aggregator does, resumes the round in flight,
and takes over the aggregator's MQTT session (one identity, one session: the messages the
broker queued for the aggregator while none was active are its). Lose the lease, and it
disconnects from the broker at once and stops (LeaseLost, exit status 75).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.core import AggregatorCore
from genofed.aggregator.effects import (
    Delivered,
    Effect,
    Publish,
    Reconnected,
    Restored,
    Ticked,
    batch,
)
from genofed.aggregator.metrics import Metrics
from genofed.aggregator.record import RoundRecord
from genofed.aggregator.rounds import ModelSpec
from genofed.aggregator.state import load_identity, open_store
from genofed.aggregator.storage import SqlStore, StoreUnavailable
from genofed.aggregator.store_pg import LeaseLost
from genofed.errors import LocalInputError
from genofed.models.manifest import load_bundle
from genofed.transport.mqtt import LinkStopped, MqttLink

if TYPE_CHECKING:
    from genofed.aggregator.lease import Lease

log = logging.getLogger(__name__)
TICK_S = 0.1
ROSTER_S = 1.0
BATCH = 512  # effects of the deliveries handled before they are applied together


class Aggregator:
    """The aggregator service of one federation: its core, store, metrics and MQTT link."""

    def __init__(self, cfg: AggregatorConfig) -> None:
        self.cfg = cfg
        bundle = load_bundle(cfg.bundle)
        if cfg.rounds.optimizer not in bundle.steps:
            raise LocalInputError(f"{cfg.bundle}: no step graph for [rounds] optimizer "
                                  f"{cfg.rounds.optimizer!r} (has {', '.join(bundle.steps)})")
        self.core = AggregatorCore(cfg, load_identity(cfg.state_dir), ModelSpec.of(bundle))
        self.metrics = Metrics()
        self.store: SqlStore | None = None  # opened by the thread that runs the service
        self.stop = threading.Event()
        self.link: MqttLink | None = None
        self._roster_at = 0.0
        self._connections = 0  # connections to the broker seen (the first is the start)
        self._lease: Lease | None = None  # PostgreSQL: held while this one is active

    @property
    def records(self) -> list[RoundRecord]:
        """The last rounds closed by this run (the journal holds every run's, all of them)."""
        return list(self.core.records)

    def run(self, stop: threading.Event | None = None) -> list[RoundRecord]:
        """Run rounds until the configured number completed (or `stop`); returns the records.
        Bad stored state raises before anything is connected."""
        self.stop = stop = stop or threading.Event()
        self.store = store = self._open_store()
        lease = None
        try:
            if self.cfg.store.url:
                from genofed.aggregator.lease import Lease

                lease = Lease(self.cfg.store.url, self.cfg.federation, self.cfg.store.lease_s)
                if not lease.acquire(stop):
                    return self.records
                store.fence = lease.fence
                lease.keep(self._lease_lost)
                self._lease = lease
            snapshot = store.retrying(store.snapshot, stop)
            first = self.core.handle(Restored(snapshot, time.monotonic()))
            self.link = MqttLink(f"genofed-{self.cfg.federation}-aggregator", self.cfg.broker,
                                 subscriptions=[self.core.topics.all_outboxes,
                                                self.core.topics.all_status], manual_ack=True,
                                 stop=stop)
            if self.cfg.metrics_port:
                self.metrics.serve(self.cfg.metrics_port)
            self.link.start()  # waits for the broker as long as it takes, saying why
            self.apply(first)
            while not stop.is_set() and not self.core.finished:
                self.step()
        except (LinkStopped, StoreUnavailable) as exc:  # asked to stop while waiting
            log.info("%s", exc)
        except LeaseLost as exc:  # a write refused, or a publication held back
            log.error("%s", exc)
            if lease is not None:
                lease.lost.set()
        finally:
            if self.link is not None:
                self.link.stop()
            if lease is not None:
                lease.release()
            self.metrics.stop()
            store.close()
        if lease is not None and lease.lost.is_set():
            raise LeaseLost("this aggregator lost its lease and stopped; restart it to "
                            "wait as the standby")
        return self.records

    def _open_store(self) -> SqlStore:
        """The configured store; a PostgreSQL server not answering is waited for (SQLite's
        file system is not: that stops the service, as it always did)."""
        said = False
        while True:
            try:
                return open_store(self.cfg.state_dir, self.cfg.store.url)
            except StoreUnavailable as exc:
                if not self.cfg.store.url or self.stop.is_set():
                    raise
                if not said:
                    log.error("%s; retrying until it answers", exc)
                    said = True
                self.stop.wait(2.0)

    def _lease_lost(self, why: str) -> None:
        """From the lease's thread: no publication from now on, and the loop stops."""
        if self.link is not None:
            self.link.stop()
        self.stop.set()

    def step(self) -> None:
        """The deliveries waiting (the first awaited for up to a tick, at most BATCH), then
        one tick."""
        assert self.link is not None
        effects: list[Effect] = []
        try:
            got = self.link.inbox.get(timeout=TICK_S)
            while True:
                effects += self.core.handle(Delivered(got.topic, got.payload, got,
                                                      time.monotonic()))
                if len(effects) >= BATCH:
                    break
                got = self.link.inbox.get_nowait()
        except queue.Empty:
            pass
        self.apply(effects)
        now = time.monotonic()
        if self.link.connections > self._connections:  # the broker came back
            self._connections = self.link.connections
            if self._connections > 1:
                self.apply(self.core.handle(Reconnected(now)))
        assert self.store is not None
        enrolled = None  # the device table: for each cohort, and every ROSTER_S (unenroll)
        if self.core.cohort_due(now) or now >= self._roster_at + ROSTER_S:
            enrolled = self.store.retrying(self.store.devices, self.stop)
            self._roster_at = now
        self.apply(self.core.handle(Ticked(now, enrolled)))

    def apply(self, effects: Iterable[Effect]) -> None:
        """Do what the core said (`effects.batch`): runs of durable effects each in one
        transaction, runs of publications each in one round trip to the broker, in order,
        each done (stored, acknowledged by the broker) before the next, so a crash between
        two leaves only the earlier ones done; then the acknowledgements, each after what it
        acknowledges is stored. A batch of deliveries (`step`) costs one commit, not one a
        message."""
        b = batch(effects)
        for c in b.counts:
            self.metrics.apply(c)
        for run in b.runs:
            if isinstance(run[0], Publish):
                assert self.link is not None
                if self._lease is not None and not self._lease.held():
                    raise LeaseLost("the lease ran out: publishing nothing more")
                self.link.publish_many([(e.topic, e.payload, e.retain) for e in run
                                        if isinstance(e, Publish)])
            else:
                assert self.store is not None
                self.store.apply_all(run, wait=self.stop)  # type: ignore[arg-type]
        for a in b.acks:
            a.token.ack()
