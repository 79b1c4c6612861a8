"""The distributed-DP codec (`privacy/noise.py`, `privacy/poisson.py`, `privacy/calibrate.py`,
conditional rounding in `protocol/codec_stages.py`): each device's noise is the Skellam its spec
says, the survivors' sum carries at least the calibrated variance at every accepted dropout
count, rounding never leaves the sensitivity bound, and the ring never wraps.

The noise comes from os.urandom, so the statistical tests are not seeded: each states its
false-alarm rate (ALPHA = 1e-6 per test), and the oracles are independent of the code (scipy's
Skellam pmf and survival function, mpmath at 40 digits)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from genofed.errors import MessageError
from genofed.privacy import poisson
from genofed.privacy.calibrate import DEFAULT_BETA, DpCodec, choose_dp_codec
from genofed.privacy.noise import SkellamNoise, skellam_tail_bound
from genofed.protocol import codec as c
from genofed.protocol.codec_mean import MeanPipeline, SumRejected, sum_norm_bound
from genofed.protocol.codec_stages import (
    StochasticRounding,
    conditional_round,
    encoded_sensitivity,
    rounding_norm_bound,
)
from genofed.protocol.fields import Fields
from genofed.protocol.ring import Ring

ALPHA = 1e-6
SEED = b"genofed-test-dp-noise-rotation!!"
FAST = settings(deadline=None, max_examples=40)


def _chi_square_p(draws: np.ndarray, pmf: np.ndarray, support: np.ndarray) -> float:
    """p-value of Pearson's test of `draws` against `pmf` on `support` (bins with expected
    counts < 20 merged into the two tails)."""
    n = draws.size
    expected = n * pmf
    keep = expected >= 20
    lo, hi = support[keep][0], support[keep][-1]
    observed = np.bincount(np.clip(draws, lo - 1, hi + 1) - (lo - 1),
                           minlength=hi - lo + 3).astype(np.float64)
    exp = np.concatenate([[n * pmf[support < lo].sum()], n * pmf[(support >= lo)
                                                                & (support <= hi)],
                          [n * pmf[support > hi].sum()]])
    exp *= n / exp.sum()
    stat = float(((observed - exp) ** 2 / np.maximum(exp, 1e-300)).sum())
    return float(stats.chi2.sf(stat, observed.size - 1))


def _skellam_pmf(variance: float, span: int) -> tuple[np.ndarray, np.ndarray]:
    support = np.arange(-span, span + 1)
    return support, stats.skellam.pmf(support, variance / 2, variance / 2)


# --- the sampler ---------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.3, 3.7, 17.5, 179.2, 1225.0, 1.2e5, 3.3e6])
def test_poisson_pmf_is_within_its_stated_relative_error_of_mpmath(lam: float) -> None:
    mpmath.mp.dps = 40
    table = poisson.PoissonTable(lam)
    ks = np.unique(np.linspace(table.low, table.low + table.size - 1, 300).astype(np.int64))
    got = poisson.poisson_pmf(ks, lam)
    slack = 1 + poisson.bd0(np.maximum(ks, 1), lam)
    for k, p, s in zip(ks, got, slack, strict=True):
        exact = mpmath.exp(-lam + int(k) * mpmath.log(lam) - mpmath.loggamma(int(k) + 1))
        assert abs(mpmath.mpf(float(p)) / exact - 1) <= poisson.PMF_REL_ERR * s, (lam, k)
    assert table.tv_bound < 2.0**-47


def test_stirling_error_term_is_exact_to_float_precision() -> None:
    # its absolute error is the pmf's relative error: the table to n = 15, the series after
    mpmath.mp.dps = 40
    for n in [*range(1, 60), 500, 10**6]:
        exact = (mpmath.loggamma(n + 1) - (n + mpmath.mpf(0.5)) * mpmath.log(n) + n
                 - mpmath.log(mpmath.sqrt(2 * mpmath.pi)))
        assert abs(float(poisson.stirlerr(np.array([float(n)]))[0]) - exact) < 2.0**-52


@pytest.mark.parametrize("variance", [0.7, 37.3, 2651.7])
def test_each_device_share_is_skellam_of_its_variance(variance: float) -> None:
    draws = SkellamNoise(variance, 200_000).sample()
    support, pmf = _skellam_pmf(variance, int(12 * math.sqrt(variance)) + 30)
    assert _chi_square_p(draws, pmf, support) > ALPHA
    # mean 0 and variance `variance`, each within 5 standard errors (Skellam's fourth
    # central moment is 3 v^2 + v)
    assert abs(draws.mean()) <= 5 * math.sqrt(variance / draws.size)
    assert abs(draws.var() - variance) <= 5 * math.sqrt((2 * variance**2 + variance)
                                                        / draws.size)


def test_noise_is_fresh_and_ignores_the_codec_generator() -> None:
    noise = SkellamNoise(50.0, 4096)
    zero = np.zeros(4096, np.int64)
    a = noise.encode(zero, np.random.default_rng(0))
    b = noise.encode(zero, np.random.default_rng(0))
    assert not np.array_equal(a, b)  # a seed anyone knows would give the same vector twice
    assert np.count_nonzero(a == b) < 4096 // 4  # P(equal coordinate) ~ 1/sqrt(4 pi v) = 0.04


# --- the survivors' sum and the calibration ------------------------------------------------

def test_survivors_sum_has_at_least_the_calibrated_variance_at_every_dropout_count() -> None:
    codec = choose_dp_codec(64, 1.0, n_max=12, n_min=8, noise_multiplier=0.8)
    target = (codec.noise_multiplier * codec.l2) ** 2
    coords = 40_000
    noise = SkellamNoise(codec.variance, coords, codec.n_min)
    total = np.zeros(coords, np.int64)
    for m in range(1, codec.n_max + 1):  # the devices that survive, one more at a time
        total += noise.sample()
        if m < codec.n_min:
            assert not codec.covers(m)
            continue
        assert codec.covers(m) and m * codec.variance >= target
        support, pmf = _skellam_pmf(m * codec.variance, int(12 * codec.stddev(m)) + 30)
        assert _chi_square_p(total, pmf, support) > ALPHA / 5  # exactly Skellam(m v)
        se = math.sqrt((2 * (m * codec.variance) ** 2 + m * codec.variance) / coords)
        assert total.var() >= target - 5 * se  # one-sided: at least what was assumed


@FAST
@given(st.integers(1, 5000), st.integers(1, 400), st.integers(0, 300),
       st.floats(0.3, 3.0), st.floats(0.05, 10.0))
def test_calibration_covers_every_accepted_count_and_refuses_below(
        dim: int, n_min: int, extra: int, z: float, clip: float) -> None:
    try:
        codec = choose_dp_codec(dim, clip, n_min + extra, n_min, z, max_bits=24)
    except c.CodecError as exc:  # a shape 24 bits cannot hold is refused, with the reason
        assert "do not fit in 24 bits" in str(exc)
        return
    assert codec.l2 == encoded_sensitivity(clip, codec.scale, dim,
                                           conditional_beta=DEFAULT_BETA)[0]
    for m in (n_min, n_min + extra // 2, n_min + extra):
        assert codec.covers(m) and codec.stddev(m) >= z * codec.l2
    assert not codec.covers(n_min - 1)
    noise = codec.noise()
    if n_min > 1:
        with pytest.raises(c.CodecError, match="fewer than the"):
            noise.decode(np.zeros(dim, np.int64), n_min - 1)
    assert noise.headroom(n_min + extra) >= noise.headroom(n_min)


def test_calibration_at_the_issue_shapes_fits_18_bits_at_under_1_percent_inflation() -> None:
    for dim in (2000, 10_000):
        codec = choose_dp_codec(dim, 1.0, n_max=1000, n_min=800, noise_multiplier=1.0)
        assert codec.bits <= 18 and codec.inflation <= 1.01
        plain = encoded_sensitivity(1.0, codec.scale, dim)[0] / codec.scale
        assert plain >= 1.1  # unconditioned rounding would inflate it by > 10%
        assert codec.pipeline(SEED).max_clients >= 1000
    wide = choose_dp_codec(100_000, 1.0, n_max=1, n_min=1, noise_multiplier=3.0, bits=30)
    assert wide.variance / 2 <= poisson.MAX_LAMBDA  # the scale stops where the sampler does
    with pytest.raises(c.CodecError, match="n_max must be >= 800"):
        choose_dp_codec(2000, 1.0, n_max=700, n_min=800, noise_multiplier=1.0)


def test_dp_codec_json_round_trip_and_inconsistent_fields_are_refused() -> None:
    codec = choose_dp_codec(501, 1.0, n_max=6, n_min=4, noise_multiplier=1.0)
    doc = codec.to_json()
    assert DpCodec.from_json(Fields(doc, "dp")) == codec
    for key, value, why in [("variance", codec.variance / 2, "less than"),
                            ("l2", codec.l2 * 0.9, "is not the"),
                            ("bits", codec.bits - 1, "bits hold"),
                            ("scale", codec.scale * 2, "is not the"),
                            ("n_min", 0, "n_min")]:
        with pytest.raises(MessageError, match=why):
            DpCodec.from_json(Fields({**doc, key: value}, "dp"))
    noise = codec.noise()
    assert SkellamNoise.from_json(Fields(noise.to_json(), "noise")) == noise
    with pytest.raises(MessageError, match="bad noise spec"):
        SkellamNoise.from_json(Fields({**noise.to_json(), "variance": -1.0}, "noise"))


# --- headroom and the bit rule -------------------------------------------------------------

@pytest.mark.parametrize("variance", [0.5, 20.0, 4000.0])
def test_headroom_is_a_true_bound_of_the_exact_skellam_tail_and_not_a_loose_one(
        variance: float) -> None:
    dim, fail = 1000, 1e-6
    h = skellam_tail_bound(variance, dim, fail)
    exact_tail = 2 * dim * stats.skellam.sf(h - 1, variance / 2, variance / 2)  # P(X >= h)
    assert exact_tail <= fail
    needed = stats.skellam.isf(fail / (2 * dim), variance / 2, variance / 2)
    assert h <= 1.6 * needed + 3  # Chernoff is not far from the exact quantile


def test_summed_noise_never_exceeds_the_headroom() -> None:
    noise, trials = SkellamNoise(30.0, 2000, fail_prob=1e-6), 60
    for n in (1, 5, 40):
        h = noise.headroom(n)
        # false alarm: the exact chance that some coordinate of a trial exceeds h, times trials
        exceed = 1 - (1 - 2 * stats.skellam.sf(h, 15.0 * n, 15.0 * n)) ** 2000
        assert trials * exceed < 1e-5
        worst = max(int(np.abs(sum(noise.sample() for _ in range(n))).max())
                    for _ in range(trials))
        assert worst <= h


def test_summed_noise_norm_stays_under_its_l2_tail_bound_which_beats_sqrt_d_headroom() -> None:
    # ||N||^2 has mean d V and standard deviation sqrt(d (2V^2 + V)) ~ 3% of it at d = 2000:
    # the bound is > 7 of those above the mean, so 120 trials never pass it by chance
    noise = SkellamNoise(30.0, 2000, fail_prob=1e-6)
    for n in (1, 5, 40):
        big_v, bound = 30.0 * n, noise.norm_headroom(n)
        assert bound < math.sqrt(2000) * noise.headroom(n) / 3
        assert bound**2 >= 2000 * big_v + 7 * math.sqrt(2000 * (2 * big_v**2 + big_v))
        assert bound <= 1.2 * math.sqrt(2000 * big_v)  # and not far above the typical norm
        norms = [float(np.linalg.norm(sum(noise.sample() for _ in range(n))))
                 for _ in range(40)]
        assert max(norms) <= bound


def test_the_dp_bit_rule_never_wraps_at_small_bits() -> None:
    rng = np.random.default_rng(11)
    for bits, dim, n in [(8, 17, 3), (10, 64, 10), (12, 300, 30)]:
        codec = choose_dp_codec(dim, 1.0, n_max=n, n_min=max(1, n - 2), noise_multiplier=1.0,
                                bits=bits)
        pipe = codec.pipeline(rng.bytes(32))
        stages = pipe.pipeline.stages
        top = (1 << (bits - 1)) - 1
        for _ in range(40):
            u = rng.normal(size=dim)
            xs = [u / np.linalg.norm(u) * rng.uniform(0.9, 1.0) for _ in range(n)]  # aligned
            pre = []
            for x in xs:
                y = x
                for stage in stages[:-1]:
                    y = stage.encode(y, rng)
                pre.append(y)
            true_sum = np.sum(pre, axis=0)
            assert int(np.abs(true_sum).max()) <= top
            ring = Ring(bits)
            total = ring.sum([ring.wrap(y) for y in pre])
            assert np.array_equal(ring.unwrap(total), true_sum)
            pipe.check_sum(total, n)  # aligned honest updates at the clip pass the check


# --- conditional rounding ------------------------------------------------------------------

def _worst_input(dim: int, c_norm: float, rng: np.random.Generator) -> np.ndarray:
    """A vector of norm c_norm whose coordinates all have fractional part near 1/2 (the
    rounding's variance at its largest, d/4)."""
    v = np.floor(rng.normal(size=dim) * c_norm / math.sqrt(dim)) + 0.5
    return v * (c_norm / np.linalg.norm(v))


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 3000), st.floats(0.5, 200.0),
       st.sampled_from([DEFAULT_BETA, 0.1, 1e-3]))
def test_conditional_rounding_never_outputs_a_vector_above_the_bound(
        seed: int, dim: int, c_norm: float, beta: float) -> None:
    rng = np.random.default_rng(seed)
    stage = StochasticRounding(c_norm, 1.0, beta)  # scale c_norm, clip 1: sC = c_norm
    bound = stage.norm_bound(dim)
    assert bound == rounding_norm_bound(c_norm, dim, beta) <= c_norm + math.sqrt(dim)
    for x in (_worst_input(dim, 1.0, rng), rng.normal(size=dim) / math.sqrt(dim)):
        x = x / max(1.0, float(np.linalg.norm(x)))
        q = stage.encode(x, rng)
        assert float(np.linalg.norm(q)) <= bound


def test_unconditioned_rounding_does_leave_the_bound_that_conditional_rounding_keeps() -> None:
    rng = np.random.default_rng(5)
    dim, c_norm = 2000, 60.0
    v = _worst_input(dim, c_norm, rng)
    bound = rounding_norm_bound(c_norm, dim, DEFAULT_BETA)
    plain = StochasticRounding(1.0, c_norm)
    over = sum(float(np.linalg.norm(plain.encode(v, rng))) > bound for _ in range(400))
    assert over > 0  # so the conditioning is what keeps the sensitivity at the bound


@pytest.mark.parametrize("beta", [DEFAULT_BETA, 0.05])
def test_rejection_rate_is_at_most_beta(beta: float) -> None:
    rng = np.random.default_rng(17)
    dim, c_norm, trials = 2000, 60.0, 1500
    v = _worst_input(dim, c_norm, rng)
    bound = rounding_norm_bound(c_norm, dim, beta)
    draws = sum(conditional_round(v, bound, rng)[1] for _ in range(trials))
    rejected = draws - trials
    # rejections ~ Binomial(draws, p <= beta): at most beta plus 5 standard errors
    assert rejected / draws <= beta + 5 * math.sqrt(beta * (1 - beta) / draws)


def test_conditional_rounding_is_unbiased_within_statistical_error() -> None:
    rng = np.random.default_rng(23)
    dim, reps = 300, 4000
    stage = StochasticRounding(40.0, 1.0, DEFAULT_BETA)
    x = rng.normal(size=dim)
    x /= np.linalg.norm(x)
    v = 40.0 * x
    mean = np.mean([stage.encode(x, rng) for _ in range(reps)], axis=0)
    frac = v - np.floor(v)
    se = np.sqrt(np.maximum(frac * (1 - frac), 1e-12) / reps)
    stat = float((((mean - v) / se) ** 2).sum())
    assert stats.chi2.sf(stat, dim) > ALPHA


def test_plain_rounding_is_the_old_rounding_bit_for_bit() -> None:
    x = np.random.default_rng(3).normal(size=1000)
    got = StochasticRounding(37.0, 5.0).encode(x, np.random.default_rng(9))
    v = np.clip(x * 37.0, -185.0, 185.0)
    want = (np.floor(v) + (np.random.default_rng(9).random(1000) < v - np.floor(v)))
    assert np.array_equal(got, want.astype(np.int64))


def test_encoded_sensitivity_l1_is_the_integer_vector_bound() -> None:
    for dim, scale in [(10, 0.5), (2000, 100.0), (4, 1000.0)]:
        l2, l1 = encoded_sensitivity(1.0, scale, dim, conditional_beta=DEFAULT_BETA)
        assert l2 <= scale + math.sqrt(dim)
        assert l1 == min(math.sqrt(dim) * l2, l2 * l2)
    # an integer vector at the L2 bound never passes the L1 bound
    rng = np.random.default_rng(2)
    for _ in range(200):
        q = rng.integers(-3, 4, size=int(rng.integers(1, 50)))
        l2 = float(np.linalg.norm(q))
        assert np.abs(q).sum() <= min(math.sqrt(q.size) * l2, l2 * l2) + 1e-9


def test_dp_pipeline_mean_and_its_aggregate_check() -> None:
    codec = choose_dp_codec(501, 1.0, n_max=6, n_min=4, noise_multiplier=1.0)
    pipe = codec.pipeline(SEED)
    assert isinstance(pipe, MeanPipeline) and pipe.noise == codec.noise()
    rng = np.random.default_rng(4)
    xs = [0.05 * rng.normal(size=501) for _ in range(6)]
    encs = [pipe.encode(x, rng) for x in xs]
    ring = Ring(codec.bits)
    for n in (6, 5, 4):
        mean = pipe.decode_mean(ring.sum(encs[:n]), n)
        noise_norm = codec.stddev(n) * math.sqrt(501) / (codec.scale * n)
        assert np.linalg.norm(mean - np.mean(xs[:n], axis=0)) <= 1.5 * noise_norm
    with pytest.raises(c.CodecError, match="3 survivors are fewer than the 4"):
        pipe.decode_mean(ring.sum(encs[:3]), 3)
    bound = sum_norm_bound(6, 1.0, codec.scale, 501, noise=codec.noise(),
                           conditional_beta=DEFAULT_BETA)
    assert pipe.norm_bound(6) == bound < sum_norm_bound(6, 1.0, codec.scale, 501,
                                                        noise=codec.noise())
    crafted = np.full(501, math.floor(bound / math.sqrt(501)) + 1, np.int64)  # just outside
    with pytest.raises(SumRejected):
        pipe.check_sum(ring.wrap(crafted), 6)
