"""Shamir t-of-k: pycryptodome's GF(2^128) scheme vs genofed's vectorized GF(2^61 - 1) one.

Per client, a round splits two 32-byte secrets (s_sk and b_u) into k shares; the server
rebuilds one secret per client from t shares. pycryptodome (`Crypto.Protocol.SecretSharing.
Shamir`, 16-byte secrets, so two chunks per secret; it runs in the benchmark environment of
`benchmarks/secagg.py`, where Flower brings it) against `genofed.protocol.secagg.shamir`
(five 61-bit limbs per secret, whole batches at once). Both are checked to reconstruct exactly.
(k, t) are the rule's choices for n = 100 and 500 at corrupt 0.1 and dropout 0, 0.1, 0.3,
and n = 1,000 at dropout 0.3 (414, 247). genofed's rows also time the server's check that
every share of a secret fits its first t (`shamir.consistent`, `reveal.py`) and the peak
traced memory of rebuilding a 1,000-client round's secrets (SECRETS_AT_SCALE at once).

    genofed bench shamir      ->  benchmarks/results/shamir.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CASES = [(12, 12), (32, 22), (72, 42), (82, 57), (276, 164), (414, 247)]
SECRETS_AT_SCALE = 1000
SECRETS = 100  # secrets rebuilt per timing of genofed's batch combine
PYCRYPTODOME_SECRETS = 3  # pycryptodome rebuilds this many, one by one


def pycryptodome_worker(cases: list[list[int]]) -> list[dict[str, Any]]:
    """Time pycryptodome's split (two 32-byte secrets) and combine (per secret)."""
    from Crypto.Protocol.SecretSharing import Shamir

    rows = []
    for k, t in cases:
        secrets = [os.urandom(32) for _ in range(2)]
        t0 = time.perf_counter()
        shares = [[Shamir.split(t, k, s[i:i + 16], ssss=False) for i in (0, 16)]
                  for s in secrets]
        split_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(PYCRYPTODOME_SECRETS):
            got = b"".join(Shamir.combine(chunk[-t:], ssss=False) for chunk in shares[0])
            assert got == secrets[0]
        rows.append({"k": k, "t": t, "split_s_per_client": split_s,
                     "combine_s_per_secret": (time.perf_counter() - t0) / PYCRYPTODOME_SECRETS})
    return rows


def genofed_case(k: int, t: int) -> dict[str, Any]:
    """Time genofed's split (two 32-byte secrets) and batch combine (per secret)."""
    from genofed.protocol.secagg import shamir

    xs = np.arange(1, k + 1, dtype=np.uint64)
    two = np.frombuffer(os.urandom(64), dtype=np.uint8).reshape(2, 32)
    shamir.split(two, xs, t)  # warm-up
    t0 = time.perf_counter()
    shamir.split(two, xs, t)
    split_s = time.perf_counter() - t0
    secrets = np.frombuffer(os.urandom(32 * SECRETS), dtype=np.uint8).reshape(SECRETS, 32)
    shares = shamir.split(secrets, xs, t)
    rng = np.random.default_rng(k)
    pick = np.stack([rng.choice(k, t, replace=False) for _ in range(SECRETS)])
    ys = np.take_along_axis(shares, pick[:, :, None], axis=1)
    t0 = time.perf_counter()
    got = shamir.combine(xs[pick], ys)
    combine_s = (time.perf_counter() - t0) / SECRETS
    assert np.array_equal(got, secrets)
    t0 = time.perf_counter()
    fit = shamir.consistent(xs[None, :t].repeat(SECRETS, 0), shares[:, :t], xs[None, t:]
                            .repeat(SECRETS, 0), shares[:, t:]) if k > t else np.ones(1, bool)
    check_s = (time.perf_counter() - t0) / SECRETS
    assert fit.all()
    return {"k": k, "t": t, "split_s_per_client": split_s, "combine_s_per_secret": combine_s,
            "check_s_per_secret": check_s, "combine_peak_mb_1000": _peak_mb(k, t)}


def _peak_mb(k: int, t: int) -> float:
    """Peak traced memory of rebuilding SECRETS_AT_SCALE secrets at once (one round's)."""
    import tracemalloc

    from genofed.protocol.secagg import shamir

    secrets = np.frombuffer(os.urandom(32 * SECRETS_AT_SCALE), dtype=np.uint8).reshape(-1, 32)
    xs = np.arange(1, k + 1, dtype=np.uint64)
    shares = shamir.split(secrets, xs, t)
    tracemalloc.start()
    try:
        shamir.combine(np.tile(xs[:t], (SECRETS_AT_SCALE, 1)), shares[:, :t])
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from secagg import bench_python

    from genofed.cli.bench import write_results

    out = subprocess.run([str(bench_python()), __file__, "--pycryptodome",
                          json.dumps(CASES)], capture_output=True, text=True, check=True)
    theirs = {(r["k"], r["t"]): r for r in json.loads(out.stdout.splitlines()[-1])}
    rows, speed = [], {}
    for k, t in CASES:
        ours, ref = genofed_case(k, t), theirs[(k, t)]
        for impl, r in (("genofed GF(2^61-1), numpy", ours), ("pycryptodome GF(2^128)", ref)):
            rows.append({"impl": impl, **r})
        speed[f"split_speedup_k{k}_t{t}"] = ref["split_s_per_client"] / ours["split_s_per_client"]
        speed[f"combine_speedup_k{k}_t{t}"] = \
            ref["combine_s_per_secret"] / ours["combine_s_per_secret"]
    write_results("shamir", rows, {"kept": "genofed GF(2^61-1), numpy", **speed})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pycryptodome", help="JSON list of [k, t] (benchmark env only)")
    a = ap.parse_args()
    if a.pycryptodome:
        print(json.dumps(pycryptodome_worker(json.loads(a.pycryptodome))))
    else:
        main()
