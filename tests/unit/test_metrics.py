"""The aggregator's Prometheus endpoint serves what the core counted, each count once."""

import urllib.request

from genofed.aggregator.effects import Count
from genofed.aggregator.metrics import Metrics
from genofed.broker.mosquitto import free_port


def test_metrics_endpoint_serves_the_cores_counts() -> None:
    m = Metrics()
    port = free_port()
    m.serve(port)
    try:
        for c in (Count("rounds", "completed"), Count("participants", value=4),
                  Count("dropouts", value=2), Count("rejected", "malformed", 3),
                  Count("bytes", "up", 600), Count("bytes", "up", 400),
                  Count("stage_seconds", "round", 1.5), Count("model_version", value=7),
                  Count("participants", value=3)):
            m.apply(c)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) \
            .read().decode()
    finally:
        m.stop()
    assert 'genofed_rounds_total{status="completed"} 1.0' in text
    assert "genofed_round_participants 3.0" in text  # a gauge: the last value
    assert "genofed_dropouts_total 2.0" in text
    assert 'genofed_messages_rejected_total{reason="malformed"} 3.0' in text
    assert 'genofed_bytes_total{direction="up"} 1000.0' in text
    assert 'genofed_stage_seconds_count{stage="round"} 1.0' in text
    assert "genofed_model_version 7.0" in text
