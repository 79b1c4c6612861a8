"""Prometheus metrics of the aggregator, served on a local port when configured.

Each service instance owns its own registry (no process-global state), so tests and several
aggregators in one process do not mix their counts.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from genofed.aggregator.record import RoundRecord
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
        self.bytes = Counter("genofed_bytes", "Payload bytes, by direction", ["direction"],
                             registry=r)
        self.stage_seconds = Histogram("genofed_stage_seconds", "Latency of a round's stages",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.model_version = Gauge("genofed_model_version", "Current global model version",
                                   registry=r)
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

    def round_closed(self, record: RoundRecord, expected: int) -> None:
        """Count one closed round."""
        self.rounds.labels(record.status).inc()
        self.participants.set(record.participants)
        self.dropouts.inc(max(0, expected - record.participants))
        self.bytes.labels("up").inc(record.bytes_up)
        self.stage_seconds.labels("round").observe(record.seconds)
        for stage, seconds in record.stage_seconds.items():
            self.stage_seconds.labels(stage).observe(seconds)
