"""`genofed aggregator run`: the aggregator's I/O shell around its core.

The core (`core.py`) decides everything; this shell feeds it events and does what it says,
effect by effect, in the order given: durable effects into SQLite (`store.py`), then the
acknowledgements and publications that depend on them over MQTT (`transport/mqtt.py`), and
counts into Prometheus (`metrics.py`). Events: every delivery from the broker, a clock tick
at least every 0.1 s, and the store read back once at start.

Bad local input (config, bundle, stored state) stops it before it connects, with one line;
bad network input is the core's to log, count and drop. State lives in `state_dir`
(`state.py`); a crash loses no acknowledged message and no journaled round, because nothing
is acknowledged or published before what it depends on is on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable

from genofed.aggregator.config import AggregatorConfig
from genofed.aggregator.core import AggregatorCore
from genofed.aggregator.effects import (
    Ack,
    Count,
    Delivered,
    Effect,
    Publish,
    Reconnected,
    Restored,
    Ticked,
)
from genofed.aggregator.metrics import Metrics
from genofed.aggregator.record import RoundRecord
from genofed.aggregator.rounds import ModelSpec
from genofed.aggregator.state import load_identity, state_path
from genofed.aggregator.store import Store, StoreUnavailable
from genofed.errors import LocalInputError
from genofed.models.manifest import load_bundle
from genofed.transport.mqtt import LinkStopped, MqttLink

log = logging.getLogger(__name__)
TICK_S = 0.1
ROSTER_S = 1.0


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
        self.store: Store | None = None  # opened by the thread that runs the service
        self.stop = threading.Event()
        self.link: MqttLink | None = None
        self._roster_at = 0.0
        self._connections = 0  # connections to the broker seen (the first is the start)

    @property
    def records(self) -> list[RoundRecord]:
        """The last rounds closed by this run (the journal holds every run's, all of them)."""
        return list(self.core.records)

    def run(self, stop: threading.Event | None = None) -> list[RoundRecord]:
        """Run rounds until the configured number completed (or `stop`); returns the records.
        Bad stored state raises before anything is connected."""
        self.stop = stop = stop or threading.Event()
        self.store = Store(state_path(self.cfg.state_dir))
        try:
            first = self.core.handle(Restored(self.store.snapshot(), time.monotonic()))
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
        finally:
            if self.link is not None:
                self.link.stop()
            self.metrics.stop()
            self.store.close()
        return self.records

    def step(self) -> None:
        """One delivery, if one arrives within a tick, then one tick."""
        assert self.link is not None
        try:
            got = self.link.inbox.get(timeout=TICK_S)
            self.apply(self.core.handle(Delivered(got.topic, got.payload, got,
                                                  time.monotonic())))
        except queue.Empty:
            pass
        now = time.monotonic()
        if self.link.connections > self._connections:  # the broker came back
            self._connections = self.link.connections
            if self._connections > 1:
                self.apply(self.core.handle(Reconnected(now)))
        assert self.store is not None
        enrolled = None  # the device table: for each cohort, and every ROSTER_S (unenroll)
        if self.core.cohort_due(now) or now >= self._roster_at + ROSTER_S:
            enrolled, self._roster_at = self.store.devices(), now
        self.apply(self.core.handle(Ticked(now, enrolled)))

    def apply(self, effects: Iterable[Effect]) -> None:
        """Do what the core said, in order; each returns once done (stored, acknowledged by
        the broker), so a crash between two leaves only the earlier ones done."""
        for e in effects:
            if isinstance(e, Publish):
                assert self.link is not None
                self.link.publish(e.topic, e.payload, retain=e.retain)
            elif isinstance(e, Ack):
                e.token.ack()
            elif isinstance(e, Count):
                self.metrics.apply(e)
            else:
                assert self.store is not None
                self.store.apply(e, wait=self.stop)
