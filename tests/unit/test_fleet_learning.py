"""A small cross-device federation learns (`fleet/learning.py`, the scale benchmark's
`cross_device_auc_gap` at 1,000 devices a round, here at 100)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.coordinator


def test_one_genome_devices_learn_close_to_the_centralized_model() -> None:
    """2,000 one-genome devices, 100 a round, 20 rounds of FedAdam through the fleet's codec:
    measured 0.695 against 0.748 centralized (gap 0.053, still climbing). A codec that decoded
    the wrong mean, or a server step that went the wrong way, leaves it near 0.5."""
    pytest.importorskip("torch")
    from genofed.fleet.learning import Learning, learning_gap

    r = learning_gap(Learning(genomes=2000, test=1000, per_round=100, rounds=20))
    assert r["centralized_auc"] > 0.7
    assert r["federated_auc"] > 0.65 and r["auc_gap"] < 0.08, r
    curve = list(r["auc_by_round"].values())
    assert curve[-1] > curve[0] + 0.05  # it learns round over round
    assert set(r["federated_by_ancestry"]) == set(r["centralized_by_ancestry"])
