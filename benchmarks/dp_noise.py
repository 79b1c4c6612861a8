"""The distributed-DP codec on a device: Skellam noise and conditional rounding, timed against
their peers in the same run, and the codecs `choose_dp_codec` picks at the issue's shapes.

- noise: `SkellamNoise.encode` (OS CSPRNG, inverse-CDF table) against numpy's
  `Generator.poisson` difference (PCG64, not cryptographic, so not usable; the speed a
  non-cryptographic sampler would have), at d = 10^4 and 10^5 and the per-device variance of
  the 1000-device shapes and of the demo's.
- rounding: conditional stochastic rounding against plain rounding of the same vector.
- the rule: scale, bits, sensitivity inflation and per-device variance at (d = 2000 and 10^4,
  n = 1000, n_min = 800, z = 1, C = 1) and the demo's (6 devices, d = 501, n_min 6 and 4).

    genofed bench dp_noise      ->  benchmarks/results/dp_noise.json
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

REPEATS = 20
SHAPES = [(2000, 1000, 800), (10_000, 1000, 800), (501, 6, 6), (501, 6, 4)]


def best_of(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    """The fastest of `repeats` calls (seconds), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_noise(variance: float, dim: int, rng: np.random.Generator) -> tuple[float, float]:
    """Seconds for one device's Skellam noise vector: ours, and numpy PCG64's."""
    from genofed.privacy.noise import SkellamNoise

    zero = np.zeros(dim, np.int64)
    noise = SkellamNoise(variance, dim)
    ours = best_of(lambda: noise.encode(zero))
    peer = best_of(lambda: zero + rng.poisson(variance / 2, dim) - rng.poisson(variance / 2, dim))
    return ours, peer


def time_rounding(dim: int, scale: float, rng: np.random.Generator) -> tuple[float, float]:
    """Seconds to round a unit vector at `scale`: conditional, and plain."""
    from genofed.privacy.calibrate import DEFAULT_BETA
    from genofed.protocol.codec_stages import StochasticRounding

    x = rng.normal(size=dim)
    x /= np.linalg.norm(x)
    cond, plain = StochasticRounding(scale, 1.0, DEFAULT_BETA), StochasticRounding(scale, 1.0)
    return best_of(lambda: cond.encode(x, rng)), best_of(lambda: plain.encode(x, rng))


def main() -> None:
    from genofed.cli.bench import write_results
    from genofed.privacy.calibrate import choose_dp_codec
    from genofed.privacy.noise import SkellamNoise

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for dim, n_max, n_min in SHAPES:
        codec = choose_dp_codec(dim, 1.0, n_max, n_min, 1.0)
        rows.append({"what": "rule", "dim": dim, "n_max": n_max, "n_min": n_min,
                     "scale": codec.scale, "bits": codec.bits, "inflation": codec.inflation,
                     "variance": codec.variance, "l2": codec.l2, "l1": codec.l1})
        at18 = choose_dp_codec(dim, 1.0, n_max, n_min, 1.0, bits=18)
        rows.append({"what": "rule, bits=18", "dim": dim, "n_max": n_max, "n_min": n_min,
                     "scale": at18.scale, "bits": at18.bits, "inflation": at18.inflation,
                     "variance": at18.variance, "l2": at18.l2, "l1": at18.l1})
        summary[f"bits_d{dim}_n{n_max}_nmin{n_min}"] = codec.bits
    rng = np.random.default_rng(1)
    for variance in (470.87, 1902.6, 2.186e7):
        for dim in (10_000, 100_000):
            ours, peer = time_noise(variance, dim, rng)
            rows.append({"what": "skellam encode", "dim": dim, "variance": variance,
                         "seconds": ours, "numpy_pcg64_seconds": peer, "ratio": ours / peer})
            if dim == 100_000:
                summary[f"skellam_ms_d1e5_var{variance:g}"] = 1e3 * ours
                summary[f"skellam_vs_numpy_ratio_d1e5_var{variance:g}"] = ours / peer
    for dim, sc in ((10_000, 611.2), (100_000, 2000.0)):
        ours, peer = time_rounding(dim, sc, rng)
        rows.append({"what": "conditional rounding", "dim": dim, "scale": sc,
                     "seconds": ours, "plain_seconds": peer, "ratio": ours / peer})
        summary[f"conditional_rounding_ratio_d{dim}"] = ours / peer
    summary["noise_tv_log2_per_device_d1e4_var470"] = math.log2(
        SkellamNoise(470.87, 10_000).tv_bound)
    columns = list(dict.fromkeys(k for r in rows for k in r))  # one table, every column
    write_results("dp_noise", [{k: r.get(k) for k in columns} for r in rows], summary)


if __name__ == "__main__":
    main()
