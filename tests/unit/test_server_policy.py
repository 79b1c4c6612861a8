"""Cohort selection and server optimizers, in memory."""

import numpy as np
import pytest

from genofed.aggregator.cohort import MAX_REST_S, CohortPolicy, Sidelined, select
from genofed.aggregator.optimizers import OptimizerState, ServerOptimizer, apply
from genofed.errors import LocalInputError


def test_cohort_bounds_and_membership() -> None:
    rng = np.random.default_rng(0)
    enrolled = [f"d{i}" for i in range(20)]
    online = [*enrolled[:12], "stranger"]
    pol = CohortPolicy(min_participants=4, max_participants=8, sampling_rate=0.2)
    for _ in range(50):
        c = select(pol, enrolled, online, rng)
        assert c is not None and 4 <= len(c) <= 8
        assert set(c) <= set(enrolled[:12]) and list(c) == sorted(c)
    assert select(pol, enrolled, online[:3], rng) is None  # too few online
    everyone = select(CohortPolicy(3, 100, 1.0), enrolled, online, rng)
    assert everyone == tuple(sorted(enrolled[:12]))
    with pytest.raises(LocalInputError, match="three"):
        CohortPolicy(min_participants=2)


def test_silent_devices_rest_with_doubling_rests_until_they_answer_or_reconnect() -> None:
    side = Sidelined(CohortPolicy(sideline_after=2, sideline_s=10.0))
    picked = ["a", "b", "c"]
    assert side.round_closed(picked, {"a", "b"}, now=0.0) == {}  # c: one silent round
    assert side.resting(0.0) == set()
    assert side.round_closed(picked, {"a", "b"}, now=100.0) == {"c": 10.0}
    assert side.resting(109.0) == {"c"} and side.resting(110.0) == set()
    assert side.round_closed(picked, {"a"}, now=200.0) == {"c": 20.0}  # b: first silence
    assert side.resting(205.0) == {"c"}
    for n in range(20):  # the rest doubles, up to the cap
        rest = side.round_closed(["c"], set(), now=300.0 + n)["c"]
    assert rest == MAX_REST_S
    side.forget("c")  # its status turned online again
    assert side.resting(400.0) == set() and "c" not in side.silent_rounds
    assert side.round_closed(picked, {"a", "b", "c"}, now=500.0) == {}  # b answered: reset
    assert side.silent_rounds == {}
    never = Sidelined(CohortPolicy(sideline_after=0))
    for n in range(5):
        assert never.round_closed(["x"], set(), now=float(n)) == {}
    assert never.resting(5.0) == set()
    with pytest.raises(LocalInputError, match="sideline"):
        CohortPolicy(sideline_s=0)


def test_fedavg_and_fedadam() -> None:
    w = np.zeros(3, dtype=np.float32)
    d = np.array([1.0, -2.0, 0.0])
    assert apply(ServerOptimizer("fedavg", lr=0.5), w, d, OptimizerState()).tolist() == \
        [0.5, -1.0, 0.0]
    opt, st = ServerOptimizer("fedadam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3), \
        OptimizerState()
    w1 = apply(opt, w, d, st)
    m, v = 0.1 * d, 0.01 * d * d
    np.testing.assert_allclose(w1, 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6)
    w2 = apply(opt, w1, d, st)  # moments carry over between rounds
    m2, v2 = 0.9 * m + 0.1 * d, 0.99 * v + 0.01 * d * d
    np.testing.assert_allclose(w2, w1 + 0.1 * m2 / (np.sqrt(v2) + 1e-3), rtol=1e-5)
    with pytest.raises(LocalInputError, match="fedavg or fedadam"):
        ServerOptimizer("sgd")
