"""Prometheus metrics of the aggregator, served on a local port when configured.

The core says what to count (`effects.Count`); this module only keeps the counts. Each count
is made once, where its event happens: uploaded bytes when a message is accepted, downloaded
bytes when a payload is published, never again from the round's record. Each service
instance owns its own registry (no process-global state), so tests and several aggregators in
one process do not mix their counts.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from genofed.aggregator.effects import Count
from genofed.errors import LocalInputError

log = logging.getLogger(__name__)
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The aggregator's counters, gauges and latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("genofed_rounds", "Rounds closed, by outcome", ["status"],
                              registry=r)
        self.resumed = Counter("genofed_rounds_resumed",
                               "Rounds in flight at a restart, resumed from the stored state",
                               registry=r)
        self.participants = Gauge("genofed_round_participants",
                                  "Devices whose update entered the last closed round",
                                  registry=r)
        self.dropouts = Counter("genofed_dropouts",
                                "Devices that were expected in a round and did not answer",
                                registry=r)
        self.accepted = Counter("genofed_messages_accepted", "Messages accepted, by stage",
                                ["stage"], registry=r)
        self.rejected = Counter("genofed_messages_rejected",
                                "Messages dropped, by reason", ["reason"], registry=r)
        self.aggregates_rejected = Counter(
            "genofed_aggregates_rejected", "Rounds aborted because the survivors' sum failed an "
            "aggregate check (a poisoned input), by check", ["check"], registry=r)
        self.excluded = Counter("genofed_devices_excluded",
                                "Devices excluded from a round for provable disruption, by "
                                "reason", ["reason"], registry=r)
        self.bytes = Counter("genofed_bytes", "Payload bytes, by direction", ["direction"],
                             registry=r)
        self.stage_seconds = Histogram("genofed_stage_seconds", "Latency of a round's stages",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.model_version = Gauge("genofed_model_version", "Current global model version",
                                   registry=r)
        self._by_name: dict[str, Counter | Gauge | Histogram] = {
            "rounds": self.rounds, "resumed": self.resumed, "participants": self.participants,
            "dropouts": self.dropouts, "accepted": self.accepted, "rejected": self.rejected,
            "aggregates_rejected": self.aggregates_rejected, "excluded": self.excluded,
            "bytes": self.bytes, "stage_seconds": self.stage_seconds,
            "model_version": self.model_version}
        self._server: Any = None

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on host:port."""
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise LocalInputError(f"metrics port {host}:{port}: {exc.strerror}") from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def apply(self, count: Count) -> None:
        """Move one metric as the core said: a counter adds, a gauge is set, a histogram
        observes."""
        metric = self._by_name[count.metric]
        if isinstance(metric, Counter):
            (metric.labels(count.label) if count.label else metric).inc(count.value)
        elif isinstance(metric, Gauge):
            (metric.labels(count.label) if count.label else metric).set(count.value)
        else:
            (metric.labels(count.label) if count.label else metric).observe(count.value)
