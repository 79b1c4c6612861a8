"""The update codec: each stage alone, the rule for b at its limit, the pipeline. The mean and
its aggregate check are in test_codec_mean.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genofed.protocol import codec as c
from genofed.protocol.codec_packing import CHUNK
from genofed.protocol.ring import Ring, RingError
from genofed.protocol.rotation import rotation_signs

SEED = b"genofed-test-rotation-seed"
FAST = settings(deadline=None, max_examples=60)

seeds = st.integers(0, 2**32 - 1)
clips = st.floats(0.01, 100.0)
scales = st.floats(0.5, 1e4)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _vectors(rng: np.random.Generator, n: int, dim: int, clip: float) -> list[np.ndarray]:
    """n vectors, about half of them longer than the clip bound."""
    return [rng.normal(size=dim) * clip * rng.uniform(0.1, 3.0) / math.sqrt(dim)
            for _ in range(n)]


# ---- parameters are checked when a stage is built, and the message names the bad value ------

@pytest.mark.parametrize("build, needle", [
    (lambda: c.L2Clip(0.0), "clip must be finite and > 0, got 0.0"),
    (lambda: c.L2Clip(float("nan")), "got nan"),
    (lambda: c.StochasticRounding(-1.0, 1.0), "scale must be finite and > 0, got -1.0"),
    (lambda: c.StochasticRounding(2.0**40, 2.0**11), "exceeds 2^50"),
    (lambda: c.Rotation(0, SEED), "dim must be >= 1, got 0"),
    (lambda: c.Rotation(8, b"short"), "rotation seed must be 16-64 bytes, got 5"),
    (lambda: c.choose_bits(0, 1.0, 1.0), "n must be >= 1, got 0"),
    (lambda: c.choose_bits(2**20, 1.0, 2.0**49), "need 71 bits; at most 64"),
    (lambda: c.max_clients(8, 1.0, 1000.0), "bits=8 cannot hold even one update"),
    (lambda: c.choose_bits(5, 1.0, 1.0, wrap_prob=1e-6), "wrap_prob needs the vector length"),
    (lambda: c.choose_bits(5, 1.0, 1.0, dim=8, wrap_prob=2.0), "wrap_prob must be in (0, 1)"),
    (lambda: c.build_pipeline(16, clip=1.0, scale=1e3, bits=10, rotation_seed=SEED),
     "bits=10 cannot hold even one update of clip=1.0 at scale=1000.0"),
])
def test_bad_parameters_are_refused_by_name(build: Callable[[], object], needle: str) -> None:
    with pytest.raises(c.CodecError) as info:
        build()
    assert needle in str(info.value)


@pytest.mark.parametrize("build, needle", [
    (lambda: c.ModularWrap(0), "bits must be in [1, 64], got 0"),
    (lambda: c.ModularWrap(65), "got 65"),
    (lambda: c.ModularWrap(True), "bits must be an integer, got True"),
    (lambda: c.BitPacking(0, 4), "bits must be in [1, 64], got 0"),
])
def test_bad_ring_widths_are_refused_by_name(build: Callable[[], object], needle: str) -> None:
    """The ring checks its own width, for the codec's stages as for SecAgg+."""
    with pytest.raises(RingError) as info:
        build()
    assert needle in str(info.value)


# ---- each stage alone -----------------------------------------------------------------------

@FAST
@given(seeds, clips, st.integers(1, 64))
def test_clip_bounds_the_norm_and_keeps_short_vectors(seed: int, clip: float, dim: int) -> None:
    x = _vectors(_rng(seed), 1, dim, clip)[0]
    y = c.L2Clip(clip).encode(x)
    norm = float(np.linalg.norm(x))
    assert np.linalg.norm(y) <= clip * (1 + 1e-12)
    expect = x if norm <= clip else x * (clip / norm)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(c.L2Clip(clip).decode(y), y)


def _sylvester(m: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(m)


@pytest.mark.parametrize("m", [1, 2, 4, 8, 64, 512])
def test_fwht_is_the_orthonormal_hadamard_matrix_and_its_own_inverse(m: int) -> None:
    h = np.stack([c.fwht(e) for e in np.eye(m)], axis=1)  # column j = H e_j
    np.testing.assert_allclose(h, _sylvester(m), atol=1e-12)
    np.testing.assert_allclose(h @ h.T, np.eye(m), atol=1e-12)  # orthonormal
    x = _rng(m).normal(size=m)
    np.testing.assert_allclose(c.fwht(c.fwht(x)), x, atol=1e-12)  # self-inverse


def test_fwht_refuses_other_lengths() -> None:
    with pytest.raises(c.CodecError, match="power of two"):
        c.fwht(np.ones(12))


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 7, 8, 12, 100, 257])
def test_rotation_is_orthogonal_without_padding(dim: int) -> None:
    rot = c.Rotation(dim, SEED)
    r = np.stack([rot.encode(e) for e in np.eye(dim)], axis=1)
    np.testing.assert_allclose(r.T @ r, np.eye(dim), atol=1e-12)
    back = np.stack([rot.decode(e) for e in np.eye(dim)], axis=1)
    np.testing.assert_allclose(back, r.T, atol=1e-12)  # R^-1 = R^T
    assert rot.encode(np.ones(dim)).shape == (dim,)


@FAST
@given(seeds, st.integers(1, 600))
def test_rotation_round_trips_and_is_linear(seed: int, dim: int) -> None:
    rng = _rng(seed)
    rot = c.Rotation(dim, rng.bytes(32))
    xs = rng.normal(size=(3, dim))
    ys = [rot.encode(x) for x in xs]
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_allclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-12)
        np.testing.assert_allclose(rot.decode(y), x, atol=1e-12)
    np.testing.assert_allclose(rot.decode(np.sum(ys, axis=0)), xs.sum(axis=0), atol=1e-11)


def test_rotation_signs_are_pinned_and_seeded() -> None:
    # SHAKE-256 bits, least significant first: a change here breaks every deployed device.
    assert rotation_signs(b"\x00" * 16, 24).astype(int).tolist() == [
        1, -1, 1, -1, 1, -1, 1, -1, 1, 1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1, -1, 1, -1]
    x = np.arange(100.0)
    assert np.array_equal(c.Rotation(100, SEED).encode(x), c.Rotation(100, SEED).encode(x))
    assert not np.allclose(c.Rotation(100, SEED).encode(x), c.Rotation(100, SEED[::-1]).encode(x))


@FAST
@given(seeds, st.floats(0.1, 1e4), st.floats(0.01, 100.0), st.integers(1, 200))
def test_rounding_stays_within_one_step(seed: int, scale: float, max_abs: float,
                                        dim: int) -> None:
    rng = _rng(seed)
    stage = c.StochasticRounding(scale, max_abs)
    x = rng.uniform(-max_abs, max_abs, size=dim)
    q = stage.encode(x, rng)
    assert q.dtype == np.int64 and np.all(np.abs(q) <= stage.bound)
    assert np.all(np.abs(stage.decode(q) - x) < 1.0 / scale)
    # beyond max_abs (float error of an earlier stage) the bound still holds
    assert np.all(np.abs(stage.encode(x * 1.5, rng)) <= stage.bound)


def _worst_bias_z(round_fn: Callable[[np.ndarray], np.ndarray]) -> float:
    """Largest |mean rounding error| over 2000 draws, in standard errors, over 1000 values."""
    draws, rng = 2000, _rng(7)
    # fractions kept off 0 and 1, where a mean of Bernoulli draws is far from normal
    v = rng.integers(-50, 50, size=1000) + rng.uniform(0.05, 0.95, size=1000)
    frac = v - np.floor(v)
    err = round_fn(np.tile(v, draws)).reshape(draws, v.size) - v
    stderr = np.sqrt(frac * (1 - frac) / draws)
    return float(np.max(np.abs(err.mean(axis=0)) / stderr))


def test_stochastic_rounding_is_unbiased() -> None:
    stage = c.StochasticRounding(1.0, 100.0)
    z = _worst_bias_z(lambda v: stage.encode(v, _rng(11)).astype(np.float64))
    # 1000 standard normal means: the largest is ~3.3; 5 fails with probability ~6e-4.
    assert z < 5.0
    # the same criterion does catch a biased rounding
    assert _worst_bias_z(np.floor) > 100 and _worst_bias_z(np.round) > 5.0


def test_no_noise_is_the_identity() -> None:
    q = np.arange(-3, 4, dtype=np.int64)
    noise = c.NoNoise()
    assert noise.encode(q, _rng(0)) is q and noise.decode(q, 5) is q and noise.headroom(10) == 0


@FAST
@given(st.data(), st.integers(1, 64))
def test_wrap_round_trips_the_signed_range(data: st.DataObject, bits: int) -> None:
    half = 1 << (bits - 1)
    lo, hi = -half, half - 1
    values = data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=50))
    wrap = c.ModularWrap(bits)
    ring = wrap.encode(np.array([*values, lo, hi], dtype=np.int64))
    assert ring.dtype == Ring(bits).word and (bits == 64 or int(ring.max()) < (1 << bits))
    assert wrap.decode(ring).tolist() == [*values, lo, hi]
    if bits < 64:
        with pytest.raises(RingError, match=f"does not fit in {bits} signed bits"):
            wrap.encode(np.array([hi + 1], dtype=np.int64))


@FAST
@given(st.data(), st.integers(2, 64))
def test_ring_sum_decodes_exactly_when_the_total_fits(data: st.DataObject, bits: int) -> None:
    half = 1 << (bits - 1)
    parts = data.draw(st.lists(st.integers(-half, half - 1), min_size=2, max_size=8))
    total = sum(parts)
    if not -half <= total < half:
        return  # partial sums may wrap; only the total has to fit
    wrap = c.ModularWrap(bits)
    ring = Ring(bits).sum([wrap.encode(np.array([p], dtype=np.int64)) for p in parts])
    assert wrap.decode(ring).tolist() == [total]


@pytest.mark.parametrize("bits", range(1, 65))
def test_bit_packing_round_trips_every_width(bits: int) -> None:
    rng = _rng(bits)
    top = (1 << bits) - 1
    for count in (0, 1, 7, 8, 9, 1001):
        v = rng.integers(0, top, size=count, dtype=np.uint64, endpoint=True)
        v[: min(count, 2)] = [0, top][: min(count, 2)]
        data = c.pack_bits(v, bits)
        assert len(data) == c.packed_size(count, bits) == math.ceil(count * bits / 8)
        assert c.pack_bits(v.astype(Ring(bits).word), bits) == data
        back = c.unpack_bits(data, bits, count)
        assert back.dtype == Ring(bits).word
        np.testing.assert_array_equal(back, v)
    if bits < 64:
        with pytest.raises(RingError, match=f"not below 2\\^{bits}"):
            c.pack_bits(np.array([top + 1], dtype=np.uint64), bits)


@pytest.mark.parametrize("bits", [3, 13, 20, 32])
def test_bit_packing_across_chunks(bits: int) -> None:
    v = _rng(bits).integers(0, 1 << bits, size=2 * CHUNK + 5, dtype=np.uint64)
    pack = c.BitPacking(bits, v.size)
    data = pack.encode(v)
    assert len(data) == pack.size
    np.testing.assert_array_equal(pack.decode(data), v)


def test_bit_packing_wire_layout_and_malformed_payloads() -> None:
    assert c.pack_bits(np.array([1, 2], dtype=np.uint64), 3) == bytes([0b010_001])
    with pytest.raises(c.CodecError, match="2 bytes, expected 1"):
        c.unpack_bits(b"\x11\x00", 3, 2)
    with pytest.raises(c.CodecError, match="non-zero padding bits"):
        c.unpack_bits(bytes([0b1_010_001]), 3, 2)  # bit 6 is padding
    with pytest.raises(c.CodecError, match="expected 3 coordinates"):
        c.BitPacking(3, 3).encode(np.zeros(2, dtype=np.uint64))


# ---- the rule for b -------------------------------------------------------------------------

@FAST
@given(st.integers(1, 10**6), clips, scales)
def test_choose_bits_and_max_clients_are_inverse(n: int, clip: float, scale: float) -> None:
    bits = c.choose_bits(n, clip, scale)
    assert c.max_clients(bits, clip, scale) >= n
    per_device = math.ceil(scale * clip)
    if bits > 1 and per_device < (1 << (bits - 2)):  # b - 1 bits hold one device
        assert c.max_clients(bits - 1, clip, scale) < n
    bound = n * math.ceil(scale * clip)
    assert (1 << (bits - 1)) - 1 >= bound > (1 << (bits - 2)) - 1  # the documented rule


def _worst_case(pipe: c.Pipeline, sign: float, j: int, clip: float) -> np.ndarray:
    """R^T (sign * C e_j): the update that puts its whole norm on rotated coordinate j."""
    rotation = pipe.stages[1]
    assert isinstance(rotation, c.Rotation)
    e = np.zeros(pipe.dim)
    e[j] = sign * clip
    return rotation.decode(e)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_wrap_rule_holds_at_the_largest_n_and_not_one_beyond(sign: float) -> None:
    clip, scale, bits, dim, j = 2.0, 500.0, 16, 100, 37  # s*C = 1000, top = 32767
    pipe = c.build_pipeline(dim, clip=clip, scale=scale, bits=bits, rotation_seed=SEED)
    n = pipe.max_clients
    assert n == c.max_clients(bits, clip, scale) == 32 and c.choose_bits(n, clip, scale) == bits
    x = _worst_case(pipe, sign, j, clip)
    rng = _rng(3)
    encs = [pipe.encode(x, rng) for _ in range(n + 1)]
    wrap = c.ModularWrap(bits)
    ints = np.array([wrap.decode(e) for e in encs])
    assert np.all(ints[:, j] == sign * 1000)  # every device at the per-device extreme
    total = Ring(bits).sum(encs[:n])
    np.testing.assert_array_equal(wrap.decode(total), ints[:n].sum(axis=0))  # exact, no wrap
    assert abs(int(wrap.decode(total)[j])) == 32000 > (1 << (bits - 1)) - 1 - 1000  # at the edge
    np.testing.assert_allclose(pipe.decode_sum(total, n), n * x, atol=n * math.sqrt(dim) / scale)
    # one more device is refused, and would indeed have wrapped
    with pytest.raises(c.CodecError, match=f"n must be in \\[1, {n}\\], got {n + 1}"):
        pipe.decode_sum(Ring(bits).sum(encs), n + 1)
    assert c.choose_bits(n + 1, clip, scale) == bits + 1
    assert np.sign(wrap.decode(Ring(bits).sum(encs))[j]) == -sign


def test_probabilistic_rule_holds_for_seed_independent_inputs_only() -> None:
    dim, n, clip, scale, prob = 1000, 20, 1.0, 200.0, 1e-6
    bits = c.choose_bits(n, clip, scale, dim=dim, wrap_prob=prob)
    assert bits < c.choose_bits(n, clip, scale)  # that is the point of it: 12 bits vs 13
    bound = c.sum_bound(n, clip, scale, dim=dim, wrap_prob=prob)
    tau = math.sqrt(2 * math.log(2 * dim / prob) / 512)  # the documented rule, window N = 512
    assert bound == math.ceil(scale * n * clip * tau) + 1 + n == 1178
    rng = _rng(9)
    direction = rng.normal(size=dim)
    x = direction * clip / np.linalg.norm(direction)  # n aligned devices: the largest L2 sum
    worst = 0
    for k in range(40):  # 40 rounds, a fresh seed each
        pipe = c.build_pipeline(dim, clip=clip, scale=scale, bits=bits,
                                rotation_seed=k.to_bytes(16, "big"), wrap_prob=prob)
        assert pipe.max_clients >= n
        total = Ring(bits).sum([pipe.encode(x, rng) for _ in range(n)])
        worst = max(worst, int(np.abs(c.ModularWrap(bits).decode(total)).max()))
        np.testing.assert_allclose(pipe.decode_sum(total, n), n * x,
                                   atol=n * math.sqrt(dim) / scale)
    assert worst <= bound
    # an input aimed at one rotated coordinate (it knows the seed) does wrap at these bits
    pipe = c.build_pipeline(dim, clip=clip, scale=scale, bits=bits, rotation_seed=SEED,
                            wrap_prob=prob)
    aimed = _worst_case(pipe, 1.0, 3, clip)
    total = Ring(bits).sum([pipe.encode(aimed, rng) for _ in range(n)])
    assert np.linalg.norm(pipe.decode_sum(total, n) - n * aimed) > 2**bits / scale / 2


# ---- the pipeline ---------------------------------------------------------------------------

@FAST
@given(seeds, st.integers(1, 200), st.integers(1, 8), clips, st.floats(1.0, 1e4))
def test_pipeline_decodes_the_sum_within_the_rounding_bound(
        seed: int, dim: int, n: int, clip: float, scale: float) -> None:
    rng = _rng(seed)
    bits = c.choose_bits(n, clip, scale)
    pipe = c.build_pipeline(dim, clip=clip, scale=scale, bits=bits, rotation_seed=rng.bytes(16))
    xs = _vectors(rng, n, dim, clip)
    encs = [pipe.encode(x, rng) for x in xs]
    got = pipe.decode_sum(Ring(bits).sum(encs), n)
    want = sum(c.L2Clip(clip).encode(x) for x in xs)
    # each device's rounding error is < 1/s per rotated coordinate; R is orthogonal
    assert np.linalg.norm(got - want) <= n * math.sqrt(dim) / scale + 1e-9 * n * clip
    assert len(c.pack_bits(encs[0], bits)) == math.ceil(dim * bits / 8)  # no padding on the wire


def test_pipeline_sum_error_matches_its_statistical_size_and_is_unbiased() -> None:
    dim, n, clip, scale = 3000, 10, 1.0, 300.0
    rng = _rng(21)
    pipe = c.build_pipeline(dim, clip=clip, scale=scale, bits=c.choose_bits(n, clip, scale),
                            rotation_seed=SEED)
    xs = _vectors(rng, n, dim, clip)
    want = sum(c.L2Clip(clip).encode(x) for x in xs)
    got = pipe.decode_sum(pipe.ring.sum([pipe.encode(x, rng) for x in xs]), n)
    # E ||error||^2 <= n * dim / 4 / s^2 (rounding variance <= 1/4 per coordinate)
    assert np.linalg.norm(got - want) <= 1.1 * math.sqrt(n * dim / 4) / scale
    # the mean over many encodings of one update converges to it: no bias after rotation
    draws = 400
    x = xs[0]
    mean = sum(pipe.decode_sum(pipe.encode(x, rng), 1) for _ in range(draws)) / draws
    z = np.abs(mean - c.L2Clip(clip).encode(x)) / (0.5 / scale / math.sqrt(draws))
    assert float(z.max()) < 5.0


def test_pipeline_refuses_bad_inputs() -> None:
    pipe = c.build_pipeline(4, clip=1.0, scale=10.0, bits=12, rotation_seed=SEED)
    rng = _rng(0)
    with pytest.raises(c.CodecError, match="shape \\(5,\\)"):
        pipe.encode(np.zeros(5), rng)
    with pytest.raises(c.CodecError, match="non-finite"):
        pipe.encode(np.array([0.0, np.nan, 0.0, 0.0]), rng)
    with pytest.raises(TypeError, match="numpy Generator"):
        pipe.encode(np.zeros(4), np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(RingError, match="not below 2\\^12"):
        pipe.decode_sum(np.array([0, 0, 0, 1 << 12], dtype=np.uint64), 1)
    with pytest.raises(c.CodecError, match="n must be in"):
        pipe.decode_sum(np.zeros(4, dtype=np.uint64), 0)
    with pytest.raises(c.CodecError, match="last stage must be a ModularWrap"):
        c.Pipeline((c.L2Clip(1.0),), 4, 1)


def test_upload_bytes_per_coordinate() -> None:
    """b / 8 per coordinate: no power-of-two padding, and no weight coordinate."""
    dim, n = 100_000, 100
    bits = c.choose_bits(n, 1.0, 1600.0)
    assert bits == 19
    pipe = c.build_pipeline(dim, clip=1.0, scale=1600.0, bits=bits, rotation_seed=SEED)
    wire = c.pack_bits(pipe.encode(np.ones(dim), _rng(2)), bits)
    assert len(wire) == math.ceil(dim * bits / 8)
    assert len(wire) / dim <= bits / 8
