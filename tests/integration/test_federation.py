"""Real parts end to end: Mosquitto on TLS with its ACL, the aggregator and three agent
processes, two secure rounds."""

from __future__ import annotations

import math
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from support.fedtools import exit_status, logs, mosquitto_pub, stop_all, wait_retained

from genofed.agent.trainer import StepTrainer
from genofed.aggregator.config import load_aggregator_config
from genofed.aggregator.service import Aggregator
from genofed.aggregator.state import read_journal, read_model
from genofed.cli.demo import load_labeled, spawn, start_broker, write_configs
from genofed.models.manifest import load_bundle
from genofed.protocol.topics import Topics

pytestmark = pytest.mark.integration


def test_two_secure_rounds_three_agents(tmp_path: Path, cohort: Path, logreg_bundle: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    # The aggregator service runs in this process (its metrics are read after it finished),
    # the agents in their own.
    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    assert len(devices) == 3
    procs: list[subprocess.Popen[bytes]] = []
    (tmp_path / "logs").mkdir()
    broker = start_broker(tmp_path, [d.name for d in devices])
    stop = threading.Event()
    try:
        agg_cfg = write_configs(tmp_path, logreg_bundle, devices, broker.port, rounds=2,
                                min_participants=3)
        agg = Aggregator(load_aggregator_config(agg_cfg))
        service = threading.Thread(target=agg.run, args=(stop,))
        service.start()
        wait_retained(tmp_path, broker.port, Topics("demo").model)  # it has subscribed
        for junk in (b"garbage", b"GSA1\x00\x00\x00\x02{}", b""):
            mosquitto_pub(tmp_path, broker.port, devices[0].name,
                          Topics("demo").outbox(devices[0].name), junk)
        for d in devices:
            procs.append(spawn(["agent", "run", "--config",
                                str(tmp_path / "config" / f"{d.name}.toml")],
                               tmp_path / "logs" / f"{d.name}.log"))
        service.join(timeout=300)
        assert not service.is_alive(), logs(tmp_path)
        for p in procs:
            assert exit_status(p, tmp_path, 60) == 0, logs(tmp_path)
    finally:
        stop.set()
        stop_all(procs, broker)

    state = tmp_path / "state" / "aggregator"
    journal = read_journal(state)
    assert [r["status"] for r in journal] == ["completed", "completed"], logs(tmp_path)
    assert all(r["participants"] == 3 for r in journal)
    assert all(int(r["bytes_up"]) > 0 and int(r["bytes_down"]) > 0 for r in journal)
    assert all(math.isnan(float(r["mean_loss"])) for r in journal)  # no loss in the clear
    w0, w2 = read_model(state, 0), read_model(state, 2)
    assert not np.allclose(w0, w2), "the global model did not change"
    # The global model's loss on held-out data fell, round after round.
    bundle = load_bundle(logreg_bundle)
    test = load_labeled(cohort / "test" / "calls.vcf.gz", cohort / "test" / "phenotypes.tsv",
                        bundle.panel())
    trainer = StepTrainer(bundle)
    losses = []
    for v in (0, 1, 2):
        trainer.set_weights(read_model(state, v))
        losses.append(float(trainer.mean_loss(test.x, test.y)))
    assert losses[2] < losses[1] < losses[0], losses
    assert caplog.text.count("dropped a message") >= 3  # the injected garbage, survived
    # Each uploaded byte counted once: the metric is the journal's sum (it was counted again
    # when each round closed, and came out twice the journal's).
    value = agg.metrics.registry.get_sample_value
    assert value("genofed_bytes_total", {"direction": "up"}) == \
        sum(int(r["bytes_up"]) for r in journal)  # type: ignore[call-overload]
    assert value("genofed_messages_rejected_total", {"reason": "no_round"}) == 3
    assert value("genofed_rounds_total", {"status": "completed"}) == 2
