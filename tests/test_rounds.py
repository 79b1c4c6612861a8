"""The aggregator's FedAvg state machine, driven in memory with a fake clock."""

import numpy as np
import pytest

from genofed.broker.rounds import FedAvgRounds, RoundPolicy
from genofed.protocol.messages import Update


def _up(device: str, rnd: int, delta: list[float], n: int, loss: float = 1.0) -> Update:
    return Update(federation="f", round=rnd, device=device, n_examples=n, mean_loss=loss,
                  bytes_down=10, delta=np.array(delta, dtype=np.float32))


def test_weighted_average_when_all_arrive() -> None:
    r = FedAvgRounds(RoundPolicy(rounds=2, min_updates=2, target_updates=2),
                     np.zeros(2, dtype=np.float32))
    assert r.open(now=0.0) == 0
    assert r.offer(_up("a", 0, [1.0, 0.0], n=1, loss=2.0), 40) is None
    assert r.poll(now=1.0) is None  # one of two, deadline far away
    assert r.offer(_up("b", 0, [0.0, 4.0], n=3, loss=1.0), 40) is None
    rec = r.poll(now=2.0)
    assert rec is not None and rec.status == "completed" and rec.participants == 2
    np.testing.assert_allclose(r.weights, [0.25, 3.0])
    assert rec.mean_loss == pytest.approx((2.0 * 1 + 1.0 * 3) / 4)
    assert rec.bytes_up == 80 and rec.bytes_down == 20 and rec.devices == ("a", "b")
    assert r.version == 1 and not r.finished


def test_deadline_closes_with_min_and_aborts_below() -> None:
    pol = RoundPolicy(rounds=3, min_updates=2, target_updates=3, round_timeout_s=10)
    r = FedAvgRounds(pol, np.zeros(1, dtype=np.float32))
    r.open(now=0.0)
    r.offer(_up("a", 0, [1.0], n=1), 1)
    rec = r.poll(now=10.0)
    assert rec is not None and rec.status == "aborted"
    assert r.version == 0 and r.weights[0] == 0.0  # nothing averaged
    assert r.open(now=10.0) == 1  # next round retrains version 0
    r.offer(_up("a", 1, [1.0], n=1), 1)
    r.offer(_up("b", 1, [3.0], n=1), 1)
    assert r.poll(now=15.0) is None
    rec = r.poll(now=20.0)
    assert rec is not None and rec.status == "completed" and rec.model_version == 0
    assert r.version == 1 and r.weights[0] == pytest.approx(2.0)


def test_refusals() -> None:
    r = FedAvgRounds(RoundPolicy(rounds=1, min_updates=1, target_updates=1),
                     np.zeros(3, dtype=np.float32))
    assert "no round is open" in str(r.offer(_up("a", 0, [0, 0, 0], n=1), 1))
    r.open(now=0.0)
    assert "round 5" in str(r.offer(_up("a", 5, [0, 0, 0], n=1), 1))
    assert "values" in str(r.offer(_up("a", 0, [0, 0], n=1), 1))
    assert r.offer(_up("a", 0, [0, 0, 0], n=1), 1) is None
    assert "already answered" in str(r.offer(_up("a", 0, [1, 1, 1], n=1), 1))
    assert "already has" in str(r.offer(_up("b", 0, [1, 1, 1], n=1), 1))
    r.poll(now=0.0)
    assert r.finished
    with pytest.raises(RuntimeError):
        r.open(now=1.0)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="min_updates"):
        RoundPolicy(min_updates=3, target_updates=2)
    with pytest.raises(ValueError, match="rounds"):
        RoundPolicy(rounds=0)
