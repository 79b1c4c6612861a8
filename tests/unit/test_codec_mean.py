"""The mean pipeline of a secure round: equal weights through the ring, and the aggregate check
(`protocol/codec_mean.py`): honest sums always pass it, up to its bound; each poisoning of the
issue fails it; what stays inside it moves the mean by at most C (+ rounding)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.poison import WITHIN, unclipped

from genofed.errors import MessageError
from genofed.protocol import codec as c
from genofed.protocol.codec_mean import MeanPipeline, SumRejected, sum_norm_bound
from genofed.protocol.ring import Ring

FAST = settings(deadline=None, max_examples=60)
SEED = b"genofed-test-mean-rotation"


def _pipe(dim: int, n: int, *, clip: float = 1.0, scale: float = 1000.0,
          seed: bytes = SEED) -> MeanPipeline:
    bits = c.choose_bits(n, clip, scale)
    return MeanPipeline(c.build_pipeline(dim, clip=clip, scale=scale, bits=bits,
                                         rotation_seed=seed))


def _sum(pipe: MeanPipeline, encs: list[np.ndarray]) -> np.ndarray:
    return Ring(pipe.pipeline.bits).sum(encs)


def _honest(pipe: MeanPipeline, xs: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [pipe.encode(x, rng) for x in xs]


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 100), st.integers(1, 12))
def test_mean_through_the_ring_is_the_mean_of_the_clipped_updates(
        seed: int, dim: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    pipe = _pipe(dim, n, seed=rng.bytes(16))
    xs = [rng.normal(size=dim) * rng.uniform(0.1, 3.0) / math.sqrt(dim) for _ in range(n)]
    mean = pipe.decode_mean(_sum(pipe, _honest(pipe, xs, seed)), n)
    want = np.mean([c.L2Clip(1.0).encode(x) for x in xs], axis=0)
    assert np.linalg.norm(mean - want) <= math.sqrt(dim) / 1000.0 + 1e-9  # the rounding bound
    assert pipe.dim == dim  # no weight coordinate


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(1, 20),
       st.sampled_from([0.01, 1.0, 7.5]), st.sampled_from([1.0, 37.0, 1e6]))
def test_honest_sums_pass_even_when_every_update_is_at_the_clip_and_aligned(
        seed: int, dim: int, n: int, clip: float, scale: float) -> None:
    # The worst honest case: n updates of norm C in one direction (the bound is attained up
    # to rounding), or all of it on one rotated coordinate, R^T (C e_j), or clipped to C.
    rng = np.random.default_rng(seed)
    pipe = _pipe(dim, n, clip=clip, scale=scale, seed=rng.bytes(16))
    u = rng.normal(size=dim)
    rotation = pipe.pipeline.stages[1]
    assert isinstance(rotation, c.Rotation)
    e = np.zeros(dim)
    e[int(rng.integers(dim))] = clip
    for x in (clip * u / np.linalg.norm(u), rotation.decode(e), 10 * clip * u / np.linalg.norm(u)):
        norm = pipe.check_sum(_sum(pipe, _honest(pipe, [x] * n, seed)), n)
        assert norm <= pipe.norm_bound(n)
        assert norm >= n * (scale * clip - math.sqrt(dim))  # nearly the bound: it is tight


def test_the_bound_is_the_derived_one_and_the_check_sits_exactly_on_it() -> None:
    n, dim, clip, scale = 4, 9, 2.0, 100.0
    pipe = _pipe(dim, n, clip=clip, scale=scale)
    bound = n * (scale * clip + 3.0)  # n (sC + sqrt(d)), sqrt(9) = 3
    assert pipe.norm_bound(n) == pytest.approx(bound, rel=2e-9)
    assert sum_norm_bound(n, clip, scale, dim) == pipe.norm_bound(n)
    ring = Ring(pipe.pipeline.bits)
    inside, outside = np.zeros(dim, np.int64), np.zeros(dim, np.int64)
    inside[0], outside[0] = math.floor(bound), math.floor(bound) + 1  # 812 passes, 813 fails
    assert pipe.check_sum(ring.wrap(inside), n) == math.floor(bound)
    with pytest.raises(SumRejected) as info:
        pipe.check_sum(ring.wrap(outside), n)
    assert info.value.check == "aggregate_norm" and isinstance(info.value, MessageError)
    assert f"more than the {bound / (n * scale):.6g} that updates clipped to 2 can make" in \
        str(info.value)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.integers(1, 12),
       st.sampled_from([0.5, 20.0, 300.0]), st.sampled_from([0.6, 0.05]))
def test_conditional_rounding_tightens_the_bound_and_honest_sums_still_pass(
        seed: int, dim: int, n: int, scale: float, beta: float) -> None:
    # Each device's rounded vector has norm <= B (redrawn until it does), so n*B replaces
    # n*(sC + sqrt(d)); aligned updates at the clip, the worst honest case, still pass.
    rng = np.random.default_rng(seed)
    bits = c.choose_bits(n, 1.0, scale)
    pipe = MeanPipeline(c.build_pipeline(dim, clip=1.0, scale=scale, bits=bits,
                                         rotation_seed=rng.bytes(16), conditional_beta=beta))
    big_b = math.sqrt(scale**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta))
                      * (scale + math.sqrt(dim) / 2))
    per_device = min(big_b, scale + math.sqrt(dim))
    assert pipe.norm_bound(n) == pytest.approx(n * per_device, rel=2e-9)
    assert pipe.norm_bound(n) <= sum_norm_bound(n, 1.0, scale, dim)
    u = rng.normal(size=dim)
    x = u / np.linalg.norm(u)
    assert pipe.check_sum(_sum(pipe, _honest(pipe, [x] * n, seed)), n) <= pipe.norm_bound(n)


@dataclass(frozen=True)
class _UniformNoise:
    """A bounded noise stage (uniform in [-h, h]) standing in for a DP mechanism."""

    h: int

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + rng.integers(-self.h, self.h + 1, size=x.shape)

    def decode(self, y: np.ndarray, n: int = 1) -> np.ndarray:
        return y

    def headroom(self, n: int) -> int:
        return n * self.h


def test_the_noise_stage_headroom_is_part_of_the_bound() -> None:
    n, dim, clip, scale, h = 5, 16, 1.0, 100.0, 50
    noise = _UniformNoise(h)
    bits = c.choose_bits(n, clip, scale, noise=noise)
    stages = (c.L2Clip(clip), c.Rotation(dim, SEED), c.StochasticRounding(scale, clip), noise,
              c.ModularWrap(bits))
    pipe = MeanPipeline(c.Pipeline(stages, dim, c.max_clients(bits, clip, scale, noise=noise)))
    assert pipe.norm_bound(n) == pytest.approx(n * (scale * clip + 4) + 4 * n * h, rel=2e-9)
    u = np.ones(dim) / 4.0  # norm 1 = C, all aligned: only the noise's room lets it pass
    pipe.check_sum(_sum(pipe, _honest(pipe, [u] * n)), n)


def _poisoned(pipe: MeanPipeline, n: int) -> dict[str, np.ndarray]:
    """Each poisoning of the issue by device 0 beside n - 1 honest devices: their ring sum."""
    rng = np.random.default_rng(7)
    honest = [0.05 * rng.normal(size=pipe.dim) for _ in range(n)]
    others = _honest(pipe, honest[1:])
    own = c.L2Clip(pipe.clip).encode(honest[0])
    ring = pipe.pipeline.ring
    attacks = {
        "skip-clip": unclipped(pipe, 1000.0 * honest[0]),
        "crafted-ring": np.full(pipe.dim, 1 << (pipe.pipeline.bits - 2), dtype=ring.word),
        "negative-weight": unclipped(pipe, -993.0 * own),
        "inflated-weight": unclipped(pipe, 1000.0 * own),
    }
    return {kind: _sum(pipe, [a, *others]) for kind, a in attacks.items()}


@pytest.mark.parametrize("kind", ["skip-clip", "crafted-ring", "negative-weight",
                                  "inflated-weight"])
def test_each_poisoning_of_the_issue_fails_the_check(kind: str) -> None:
    n = 4
    pipe = _pipe(30, n)
    with pytest.raises(SumRejected, match="a survivor's input was not a clipped update"):
        pipe.decode_mean(_poisoned(pipe, n)[kind], n)


def test_a_device_inside_the_bound_moves_the_mean_by_up_to_c_not_c_over_n() -> None:
    # What the check cannot do: the attacker's vector of norm 0.9 n C against the honest
    # direction passes, and drags the mean ~0.9 C the wrong way, where one honest device
    # moves it by ||its update|| / n <= C / n.
    n, dim, clip = 4, 30, 1.0
    pipe = _pipe(dim, n, clip=clip)
    rng = np.random.default_rng(3)
    direction = rng.normal(size=dim)
    honest = [0.05 * (direction + 0.3 * rng.normal(size=dim)) for _ in range(n)]
    clean = pipe.decode_mean(_sum(pipe, _honest(pipe, honest)), n)
    attack = unclipped(pipe, -WITHIN * n * clip * honest[0] / np.linalg.norm(honest[0]))
    poisoned = pipe.decode_mean(_sum(pipe, [attack, *_honest(pipe, honest[1:])]), n)
    rounding = math.sqrt(dim) / 1000.0
    assert np.linalg.norm(poisoned) <= clip + rounding  # the documented bound holds
    moved = np.linalg.norm(poisoned - clean)
    one_honest = max(np.linalg.norm(h) for h in honest) / n
    # Not the issue's bar: more than three times what any honest device could do even at the
    # clip (C / n), and over ten times what these honest devices do.
    assert moved > 0.8 * clip > 3 * clip / n and moved / one_honest > 10


def test_a_sum_of_the_wrong_shape_or_n_is_a_codec_error_not_a_rejection() -> None:
    pipe = _pipe(8, 3)
    with pytest.raises(c.CodecError, match="sum of shape"):
        pipe.check_sum(np.zeros(9, dtype=pipe.pipeline.ring.word), 3)
    with pytest.raises(c.CodecError, match="n must be in"):
        pipe.decode_mean(np.zeros(8, dtype=pipe.pipeline.ring.word), 0)
    with pytest.raises(c.CodecError, match="first stage must be an L2Clip"):
        MeanPipeline(c.Pipeline((c.ModularWrap(8),), 8, 1))
