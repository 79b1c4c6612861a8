"""One secure-aggregation round: genofed's SecAgg+ vs Flower's SecAgg+, same n, length, dropout
and neighbour count, in the same run.

genofed: the state machines of `genofed.protocol.secagg` driven in memory (every message
encoded, signed, sent as bytes, decoded and verified). Flower: the primitives its SecAgg+
workflow and client mod call (`flwr.common.secure_aggregation`: pseudo_rand_gen, shamir
create/combine_shares, Fernet encryption; SECP384R1 keys), in the order they call them, in
a subprocess of a separate environment (build/venv-bench, created here on first use, so flwr's
pins never touch .venv). k and t come from `choose_parameters(n, corrupt=0.1, dropout)`;
Flower gets num_shares = k + 1 (its count includes the client itself) and the same t. The
round's dropouts leave after ShareKeys, the costliest point: their mask keys must be rebuilt
and their pair masks removed. Inputs are b = 32-bit ring elements (Flower's default modulus).

Client seconds: one real client through all stages (clients are alike in cost). The other
clients only feed the server: in genofed they run the real protocol except that pair masks
between two survivors, which cancel in the sum, are left out on both sides; in Flower they share
one key set (so every pair mask is one array) and the first client's shares. Neither changes the
server's work or its result, which is checked against the plain sum. Flower's Shamir
reconstruction depends on n, k and the dropouts but not on the length: it is timed once per
(n, dropout); at n = 500 on a sample of owners, scaled to all (its pure-Python GF(2^128)
arithmetic would take tens of minutes). Configurations listed in SKIP are not run; the results
say why.

    genofed bench secagg      ->  benchmarks/results/secagg.json
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

ROOT = Path(__file__).resolve().parent.parent
BENCH_ENV = ROOT / "build" / "venv-bench"
FLOWER = "flwr==1.41.0"
NS, LENGTHS, DROPOUTS = (10, 100, 500), (10**4, 10**5, 10**6), (0.0, 0.1, 0.3)
CORRUPT, BITS = 0.1, 32
SHAMIR_SAMPLE = 3  # owners per kind whose Flower Shamir combine is timed at n = 500
SKIP = {
    (500, 10**6, 0.0): "n=500 x 10^6: left out to hold the whole run near 10 minutes on 2 cores",
    (500, 10**6, 0.1): "n=500 x 10^6: ~4,000 pair masks of 4 MB each side, beyond the budget",
    (500, 10**6, 0.3): "n=500 x 10^6: ~29,000 pair masks of 4 MB each side, beyond the budget",
    (500, 10**5, 0.3): "n=500, 30%: k=276; ~29,000 pair masks per side plus Flower's 500 "
                       "GF(2^128) reconstructions of up to 193 shares, beyond the budget",
}
HEADLINE = (100, 10**5, 0.1)


def bench_python() -> Path:
    """The benchmark environment's interpreter, creating the environment with Flower if needed."""
    py = BENCH_ENV / "bin" / "python"
    if not py.exists():
        print(f"creating {BENCH_ENV} with {FLOWER} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_ENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", FLOWER], check=True)
    return py


# -- genofed ----------------------------------------------------------------------------------

def genofed_case(n: int, length: int, dropout: float, seed: int,
                 design_dropout: float | None = None) -> dict[str, Any]:
    """Time one genofed round in which a `dropout` fraction drops, with k and t chosen for
    `design_dropout` (default: `dropout`); returns client and server seconds and upload bytes."""
    from genofed.protocol.ring import Ring
    from genofed.protocol.secagg import (
        GraphSeed,
        Participant,
        RoundConfig,
        SecAggClient,
        SecAggServer,
        SigningIdentity,
        Stage,
        choose_parameters,
        run_round,
    )

    class CancellingClient(SecAggClient):
        """Feeds the server only: omits pair masks with `survivors` (they cancel in the sum)."""

        survivors: frozenset[int] = frozenset()

        def _mask(self, partners: list[int]) -> np.ndarray:
            return super()._mask([j for j in partners if j not in self.survivors])

    params = choose_parameters(n, CORRUPT, dropout if design_dropout is None else design_dropout)
    rng = np.random.default_rng(seed)
    dropped = {int(i) for i in rng.choice(n, round(dropout * n), replace=False)}
    survivors = frozenset(set(range(n)) - dropped)
    rep = min(survivors)
    ids = [SigningIdentity.generate() for _ in range(n)]
    server_id = SigningIdentity.generate()
    ring = Ring(BITS)
    config = RoundConfig("bench", 1, tuple(Participant(f"d{i}", ids[i].public) for i in range(n)),
                         server_id.public, params, ring, length, GraphSeed(os.urandom(32)))
    clients: dict[int, SecAggClient] = {}
    for i in range(n):
        c = SecAggClient(config, i, ids[i]) if i == rep else CancellingClient(config, i, ids[i])
        if isinstance(c, CancellingClient):
            c.survivors = survivors - {rep}  # masks with the timed client stay, on both sides
        clients[i] = c
    xs = {i: ring.check(rng.integers(0, 1 << BITS, length, dtype=np.uint64)) for i in range(n)}
    res = run_round(config, SecAggServer(config, server_id), clients, xs,
                    drop={Stage.MASKED_INPUT: dropped})
    if res.total is None:
        raise RuntimeError(f"genofed round aborted: {res.aborted}")
    if not np.array_equal(res.total, ring.sum(xs[i] for i in sorted(survivors))):
        raise RuntimeError("genofed sum is wrong")
    return {"k": params.k, "t": params.t, "client_s": res.client_seconds[rep],
            "server_s": res.server_seconds, "upload_bytes": res.upload_bytes[rep],
            "masked_input_bytes": res.masked_bytes[rep]}


# -- Flower (runs in the benchmark environment; imports flwr, never genofed) ------------------

def flower_worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Time Flower's SecAgg+ primitives for one (n, dropout, k, t) at each length."""
    from flwr.common.secure_aggregation.crypto.shamir import create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        decrypt,
        encrypt,
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.secaggplus_utils import (
        pseudo_rand_gen,
        share_keys_plaintext_concat,
        share_keys_plaintext_separate,
    )
    from flwr.compat.common.parameter import bytes_to_ndarray, ndarray_to_bytes
    from flwr.supercore.primitives.asymmetric import (
        bytes_to_private_key,
        bytes_to_public_key,
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    n, k, t, dropout, seed = spec["n"], spec["k"], spec["t"], spec["dropout"], spec["seed"]
    mod = 1 << BITS
    rng = np.random.default_rng(seed)
    num_shares = k + 1
    order = [int(v) for v in rng.permutation(n)]
    half = num_shares >> 1
    nbrs = {nid: {order[(p + o) % n] for o in range(-half, half + 1)}
            for p, nid in enumerate(order)}  # includes nid itself, as in Flower
    dead = {int(i) for i in rng.choice(n, round(dropout * n), replace=False)}
    active = set(range(n)) - dead
    rep = min(active)
    peer_keys = {v: (generate_key_pairs(), generate_key_pairs()) for v in nbrs[rep] - {rep}}
    rows: list[dict[str, Any]] = []
    for length in spec["lengths"]:
        shape = [(length,)]
        # ---- one real client, all stages
        t0 = time.perf_counter()
        sk1, pk1 = generate_key_pairs()
        sk2, pk2 = generate_key_pairs()
        sk1_b, pk1_b = private_key_to_bytes(sk1), public_key_to_bytes(pk1)
        sk2_b = private_key_to_bytes(sk2)
        _ = public_key_to_bytes(pk2)
        rd_seed = os.urandom(32)
        b_shares = create_shares(rd_seed, t, num_shares)
        sk1_shares = create_shares(sk1_b, t, num_shares)
        ss2, cts = {}, {}
        for idx, v in enumerate(sorted(nbrs[rep] - {rep})):
            ss2[v] = generate_shared_key(bytes_to_private_key(sk2_b),
                                         bytes_to_public_key(public_key_to_bytes(
                                             peer_keys[v][1][1])))
            cts[v] = encrypt(ss2[v], share_keys_plaintext_concat(rep, v, b_shares[idx],
                                                                 sk1_shares[idx]))
        for v, ct in cts.items():  # stage 2: open the neighbours' bundles (same size and cost)
            share_keys_plaintext_separate(decrypt(ss2[v], ct))
        x = [rng.integers(0, mod, length, dtype=np.int64)]
        vec = parameters_addition(x, pseudo_rand_gen(rd_seed, mod, shape))
        for v in sorted(nbrs[rep] - {rep}):
            key = generate_shared_key(bytes_to_private_key(sk1_b), bytes_to_public_key(
                public_key_to_bytes(peer_keys[v][0][1])))
            m = pseudo_rand_gen(key, mod, shape)
            vec = parameters_addition(vec, m) if rep > v else parameters_subtraction(vec, m)
        upload = [ndarray_to_bytes(a) for a in parameters_mod(vec, mod)]
        _ = [b_shares[0] for _ in range(k)]  # stage 3: pick shares to return
        client_s = time.perf_counter() - t0
        if not rows:  # the timed client's keys and shares stand in for everyone's from now on
            t_sk1, t_pk1, t_sk1_b, t_pk1_b, t_seed = sk1, pk1, sk1_b, pk1_b, rd_seed
            shamir_s, shamir_timed = time_reconstructions(
                n, t, nbrs, active, spec["sample"], {"active": (rd_seed, b_shares),
                                                     "dead": (sk1_b, sk1_shares)})
        # ---- the other clients: the template key set, so every pair mask is one array
        pair = pseudo_rand_gen(generate_shared_key(t_sk1, t_pk1), mod, shape)[0]
        own = pseudo_rand_gen(t_seed, mod, shape)[0]
        xs = {u: rng.integers(0, mod, length, dtype=np.int64) for u in active}
        uploads = {}
        for u in active:
            c = sum(1 if u > v else -1 for v in nbrs[u] - {u})
            uploads[u] = ndarray_to_bytes((xs[u] + own + c * pair) % mod)
        # ---- the server (Shamir reconstructions timed above)
        t0 = time.perf_counter()
        fwd: dict[int, list[bytes]] = {v: [] for v in range(n)}
        some_ct = next(iter(cts.values()))
        for u in range(n):  # stage 1: route every client's ciphertexts
            for v in nbrs[u] - {u}:
                fwd[v].append(some_ct)
        total = None
        for u in sorted(active):  # stage 2: sum the masked vectors
            arr = [bytes_to_ndarray(uploads[u])]
            total = arr if total is None else parameters_addition(total, arr)
        assert total is not None
        total = parameters_mod(total, mod)
        for nid in range(n):  # stage 3: remove the masks with the rebuilt secrets
            if nid in active:
                total = parameters_subtraction(total, pseudo_rand_gen(t_seed, mod, shape))
                continue
            for nb in sorted((nbrs[nid] - {nid}) & active):
                key = generate_shared_key(bytes_to_private_key(t_sk1_b),
                                          bytes_to_public_key(t_pk1_b))
                m = pseudo_rand_gen(key, mod, shape)
                total = parameters_addition(total, m) if nid > nb else \
                    parameters_subtraction(total, m)
        total = parameters_mod(total, mod)
        masks_s = time.perf_counter() - t0
        expected = sum(xs[u] for u in active) % mod
        if not np.array_equal(total[0], expected):
            raise RuntimeError("Flower sum is wrong")
        rows.append({"length": length, "client_s": client_s, "server_s": masks_s + shamir_s,
                     "server_shamir_s": shamir_s,
                     "shamir_timed": shamir_timed,
                     "upload_bytes": sum(len(b) for b in upload)})
    return rows


def time_reconstructions(n: int, t: int, nbrs: dict[int, set[int]], active: set[int],
                         sample: int, secrets: dict[str, tuple[bytes, list[bytes]]]
                         ) -> tuple[float, dict[str, int]]:
    """Flower's server-side combine_shares for every owner (or `sample` per kind, scaled)."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares

    times: dict[str, list[float]] = {"active": [], "dead": []}
    count = {"active": 0, "dead": 0}
    for nid in range(n):
        kind = "active" if nid in active else "dead"
        count[kind] += 1
        holders = len(nbrs[nid] & active)  # Flower combines every share it collected
        if holders < t:
            raise RuntimeError(f"Flower: owner {nid} has {holders} < t={t} shares")
        if sample and len(times[kind]) >= sample:
            continue
        secret, shares = secrets[kind]
        s0 = time.perf_counter()
        got = combine_shares(shares[:holders])
        times[kind].append(time.perf_counter() - s0)
        assert got == secret
    total = sum(float(np.mean(v)) * count[kind] for kind, v in times.items() if v)
    return total, {kind: len(v) for kind, v in times.items()}


# -- driver ------------------------------------------------------------------------------------

def main() -> None:
    from genofed.cli.bench import write_results
    from genofed.protocol.secagg import choose_parameters

    py = bench_python()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in NS:
        for dropout in DROPOUTS:
            params = choose_parameters(n, CORRUPT, dropout)
            lengths = [L for L in LENGTHS if (n, L, dropout) not in SKIP]
            flower: dict[int, dict[str, Any]] = {}
            if lengths:
                spec = {"n": n, "k": params.k, "t": params.t, "dropout": dropout, "seed": n,
                        "lengths": lengths,
                        "sample": (1 if params.k > 200 else SHAMIR_SAMPLE) if n >= 500 else 0}
                out = subprocess.run([str(py), __file__, "--flower", json.dumps(spec)],
                                     capture_output=True, text=True, check=True)
                flower = {r["length"]: r for r in json.loads(out.stdout.splitlines()[-1])}
            for length in LENGTHS:
                row: dict[str, Any] = {"n": n, "length": length, "dropout": dropout,
                                       "k": params.k, "t": params.t}
                if (n, length, dropout) in SKIP:
                    row["skipped"] = SKIP[(n, length, dropout)]
                    rows.append(row)
                    continue
                g = genofed_case(n, length, dropout, seed=n + length)
                f = flower[length]
                row.update({
                    "genofed_client_s": g["client_s"], "genofed_server_s": g["server_s"],
                    "flower_client_s": f["client_s"], "flower_server_s": f["server_s"],
                    "flower_server_shamir_s": f["server_shamir_s"],
                    "server_speedup": f["server_s"] / g["server_s"],
                    "client_speedup": f["client_s"] / g["client_s"],
                    "genofed_masked_bytes_per_coord": g["masked_input_bytes"] / length,
                    "flower_masked_bytes_per_coord": f["upload_bytes"] / length,
                    "flower_shamir_timed_owners": f["shamir_timed"],
                })
                rows.append(row)
                print(f"n={n} L={length} dropout={dropout}: server {g['server_s']:.3f} s vs "
                      f"Flower {f['server_s']:.3f} s; client {g['client_s']:.3f} s vs "
                      f"{f['client_s']:.3f} s  [{time.perf_counter() - started:.0f} s]",
                      flush=True)
    head = next(r for r in rows if (r["n"], r["length"], r["dropout"]) == HEADLINE)
    summary = {
        "server_speedup_vs_flower": head["server_speedup"],
        "client_speedup_vs_flower": head["client_speedup"],
        "flower_upload_bytes_per_coord": head["flower_masked_bytes_per_coord"],
        "upload_bytes_per_coord": upload_bytes_per_coord(rows),
        "ring_bits": BITS,
        "corrupt_fraction": CORRUPT,
        "skipped": len(SKIP),
        "wall_s": time.perf_counter() - started,
    }
    write_results("secagg", rows, summary)


def upload_bytes_per_coord(rows: list[dict[str, Any]]) -> float:
    """Bytes per coordinate of the masked-input message at the largest length measured."""
    done = [r for r in rows if "genofed_masked_bytes_per_coord" in r]
    return min(done, key=lambda r: -r["length"])["genofed_masked_bytes_per_coord"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--flower", help="run the Flower side for one JSON spec (bench env only)")
    a = ap.parse_args()
    if a.flower:
        print(json.dumps(flower_worker(json.loads(a.flower))))
    else:
        main()
