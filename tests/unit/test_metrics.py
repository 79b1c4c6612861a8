"""The aggregator's Prometheus endpoint serves what the service counted."""

import urllib.request

from genofed.aggregator.metrics import Metrics
from genofed.aggregator.record import RoundRecord
from genofed.broker.mosquitto import free_port


def test_metrics_endpoint_counts_rounds_and_rejections() -> None:
    m = Metrics()
    port = free_port()
    m.serve(port)
    try:
        rec = RoundRecord(round=0, model_version=0, status="completed", participants=4,
                          devices=("a", "b", "c", "d"), examples=40, mean_loss=0.6,
                          bytes_up=1000, bytes_down=2000, seconds=1.5)
        m.round_closed(rec, expected=6)
        m.rejected.labels("malformed").inc(3)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) \
            .read().decode()
    finally:
        m.stop()
    assert 'genofed_rounds_total{status="completed"} 1.0' in text
    assert "genofed_round_participants 4.0" in text
    assert "genofed_dropouts_total 2.0" in text
    assert 'genofed_messages_rejected_total{reason="malformed"} 3.0' in text
    assert 'genofed_bytes_total{direction="up"} 1000.0' in text
    assert 'genofed_stage_seconds_count{stage="round"} 1.0' in text
