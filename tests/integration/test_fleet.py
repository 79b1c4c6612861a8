"""A small fleet over the real deployment: 30 one-genome devices in two processes, each a TLS
MQTT client with its own certificate and Ed25519 identity, one round of the real aggregator
process over Mosquitto with the ACL, some devices dropping out.

The genomes are the session cohort's, read from its VCFs with pysam (the agent's path), one
genome a device. The new model must be the old one plus the mean of the updates of the
devices the aggregator counted (FedAvg, lr 1), within the codec's rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.fedtools import codec_atol

from genofed.aggregator.state import read_model
from genofed.cli.demo import load_labeled
from genofed.fleet.deploy import FleetPlan, run_fleet
from genofed.models.manifest import load_bundle

pytestmark = pytest.mark.integration
N = 30


def test_a_fleet_round_with_dropouts(cohort: Path, logreg_bundle: Path, tmp_path: Path) -> None:
    panel = load_bundle(logreg_bundle).panel()
    parts = [load_labeled(d / "calls.vcf.gz", d / "phenotypes.tsv", panel)
             for d in sorted((cohort / "devices").iterdir())]
    x = np.concatenate([p.x for p in parts])[:N]
    y = np.concatenate([p.y for p in parts])[:N]
    # seed 9 drops 4 devices of 30: before training, before the shared keys, before the
    # masked input, before the consistency check (FleetPlan's rng; asserted below)
    # stages wait for no dropout's deadline: its will says it is offline (a minute is far
    # more than any stage takes here, so a stage closed at its deadline is that failure)
    plan = FleetPlan(x, y, enrolled=2 * N, drop_rate=0.1, stage_timeout_s=60.0, seed=9,
                     keep_deltas=True)
    res = run_fleet(tmp_path, logreg_bundle, plan, timeout_s=400)

    assert res["aggregator_exit"] == 0
    dev = res["per_device"]
    dropped = {n: d["dropped_at"] for n, d in dev.items() if d["dropped_at"] is not None}
    assert dropped, "the plan must drop at least one device"
    (rec,) = res["journal"]
    assert rec["status"] == "completed"
    counted = set(rec["devices"])
    # every device that reached its masked input is counted; none that dropped before it
    assert {n for n in dev if dropped.get(n, 9) > 2} <= counted
    assert not counted & {n for n, at in dropped.items() if at <= 2}
    for n in counted - set(dropped):
        assert {"0", "1", "2", "3", "4"} <= set(dev[n]["sent"]), n  # answered every stage
    deltas: dict[str, np.ndarray] = {}
    for f in tmp_path.glob("deltas-*.npz"):
        with np.load(f) as z:
            deltas |= {k: z[k] for k in z.files}
    expect = np.mean([deltas[n] for n in sorted(counted)], axis=0)
    got = read_model(tmp_path / "aggregator", 1).astype(np.float64) - \
        read_model(tmp_path / "aggregator", 0)
    np.testing.assert_allclose(got, expect, atol=codec_atol(len(counted)))
    assert np.abs(expect).max() > 1e-3
    assert res["aggregator_peak_rss_mb"] > 0 and res["broker_cpu_s"] >= 0
    agg_log = (tmp_path / "aggregator.log").read_text()
    assert "awaited are offline" in agg_log
    assert "closed at its deadline" not in agg_log
