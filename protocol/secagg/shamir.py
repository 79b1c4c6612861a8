"""Shamir t-of-k secret sharing of 32-byte secrets over GF(2^61 - 1), vectorized with numpy.

A secret is five field elements (little-endian 7-byte limbs, the last one 4 bytes); a share
is the five limbs of the polynomials evaluated at the holder's x, 40 bytes on the wire. Field
products are exact in uint64 by splitting each operand into 32-bit halves and folding with
2^61 = 1 (mod p). Splitting evaluates every polynomial of a batch at every x at once
(Horner); combining computes the Lagrange weights at 0 for a whole batch of x-sets at once
(products by pairwise tree, inverses by Fermat with a fixed addition chain). Against
pycryptodome's GF(2^128) Shamir, see `benchmarks/shamir.py` and its results file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from genofed.protocol.secagg.errors import ParameterError
from genofed.protocol.secagg.keys import SYSTEM_ENTROPY, Entropy

P = (1 << 61) - 1
SECRET_BYTES = 32
LIMBS = 5
LIMB_BYTES = 7
SHARE_BYTES = 8 * LIMBS

_P = np.uint64(P)
_LO32 = np.uint64(0xFFFFFFFF)
_LO29 = np.uint64((1 << 29) - 1)
_S3, _S29, _S32, _S61 = np.uint64(3), np.uint64(29), np.uint64(32), np.uint64(61)


def mulmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b mod p for uint64 arrays of field elements (broadcasting)."""
    a_lo, a_hi = a & _LO32, a >> _S32
    b_lo, b_hi = b & _LO32, b >> _S32
    lo = a_lo * b_lo  # < 2^64
    mid = a_lo * b_hi + a_hi * b_lo  # < 2^62
    hi = a_hi * b_hi  # < 2^58; hi * 2^64 = hi * 8 (mod p)
    r = (hi << _S3) + (mid >> _S29) + ((mid & _LO29) << _S32) + (lo & _P) + (lo >> _S61)
    return _fold(r)


def addmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b mod p."""
    return _fold(a + b)


def _fold(r: np.ndarray) -> np.ndarray:
    """Reduce values below 2^63 to [0, p)."""
    r = (r & _P) + (r >> _S61)
    return np.where(r >= _P, r - _P, r)


def invmod(a: np.ndarray) -> np.ndarray:
    """a^(p-2) = a^-1 mod p elementwise (a non-zero), by a fixed addition chain."""
    # e(k) = a^(2^k - 1): e(i + j) = e(i)^(2^j) * e(j); p - 2 = (2^59 - 1) * 4 + 1.
    e1 = a
    e2 = mulmod(_sq(e1, 1), e1)
    e3 = mulmod(_sq(e2, 1), e1)
    e6 = mulmod(_sq(e3, 3), e3)
    e8 = mulmod(_sq(e6, 2), e2)
    e12 = mulmod(_sq(e6, 6), e6)
    e24 = mulmod(_sq(e12, 12), e12)
    e48 = mulmod(_sq(e24, 24), e24)
    e56 = mulmod(_sq(e48, 8), e8)
    e59 = mulmod(_sq(e56, 3), e3)
    return mulmod(_sq(e59, 2), e1)


def _sq(x: np.ndarray, times: int) -> np.ndarray:
    """x^(2^times)."""
    for _ in range(times):
        x = mulmod(x, x)
    return x


def _prod_last_axis(x: np.ndarray) -> np.ndarray:
    """Product mod p along the last axis, by pairwise tree."""
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = np.concatenate([x, np.ones((*x.shape[:-1], 1), dtype=np.uint64)], axis=-1)
        x = mulmod(x[..., 0::2], x[..., 1::2])
    return x[..., 0]


def secrets_to_limbs(secrets: np.ndarray) -> np.ndarray:
    """(S, 32) uint8 secrets as (S, 5) field elements."""
    s = np.zeros((secrets.shape[0], LIMBS, 8), dtype=np.uint8)
    padded = np.zeros((secrets.shape[0], LIMBS * LIMB_BYTES), dtype=np.uint8)
    padded[:, :SECRET_BYTES] = secrets
    s[:, :, :LIMB_BYTES] = padded.reshape(-1, LIMBS, LIMB_BYTES)
    return s.view("<u8")[:, :, 0].astype(np.uint64)


def limbs_to_secrets(limbs: np.ndarray) -> np.ndarray:
    """(S, 5) field elements as (S, 32) uint8 secrets; limbs above 56 bits are refused."""
    if np.any(limbs >> np.uint64(8 * LIMB_BYTES)):
        raise ParameterError("reconstructed value is not a valid secret (inconsistent shares)")
    b = np.ascontiguousarray(limbs.astype("<u8")).view(np.uint8).reshape(-1, LIMBS, 8)
    return b[:, :, :LIMB_BYTES].reshape(-1, LIMBS * LIMB_BYTES)[:, :SECRET_BYTES].copy()


def random_elements(shape: tuple[int, ...], entropy: Entropy = SYSTEM_ENTROPY) -> np.ndarray:
    """Uniform field elements of `shape` from `entropy` (rejection of the one value >= p)."""
    count = int(np.prod(shape))
    out = np.frombuffer(entropy(8 * count), dtype="<u8").astype(np.uint64) & _P
    bad = np.flatnonzero(out == _P)
    while bad.size:
        out[bad] = np.frombuffer(entropy(8 * bad.size), dtype="<u8").astype(np.uint64) & _P
        bad = bad[out[bad] == _P]
    return out.reshape(shape)


def split(secrets: np.ndarray, xs: np.ndarray, t: int,
          entropy: Entropy = SYSTEM_ENTROPY) -> np.ndarray:
    """Shares of each (S, 32) uint8 secret at each x: (S, K, 5) field elements, threshold t."""
    xs = _check_xs(np.asarray(xs, dtype=np.uint64).reshape(-1))
    if secrets.ndim != 2 or secrets.shape[1] != SECRET_BYTES or secrets.dtype != np.uint8:
        raise ParameterError(f"secrets must be (S, {SECRET_BYTES}) uint8, got "
                             f"{secrets.dtype} {secrets.shape}")
    if not 1 <= t <= xs.size:
        raise ParameterError(f"threshold {t} must be in 1..{xs.size} (number of shares)")
    coeffs = random_elements((secrets.shape[0], t - 1, LIMBS), entropy)
    x = xs[None, :, None]
    acc = np.zeros((secrets.shape[0], xs.size, LIMBS), dtype=np.uint64)
    for j in range(t - 2, -1, -1):  # Horner over the random coefficients, highest first
        acc = addmod(mulmod(acc, x), coeffs[:, j:j + 1, :])
    return addmod(mulmod(acc, x), secrets_to_limbs(secrets)[:, None, :])


CHUNK_ELEMENTS = 1 << 20  # elements per temporary array when work is sliced by rows (~8 MB)
SMALL_X = 1 << 20  # x's up to this (client index + 1) take inverses from a table


def lagrange_at(xs: np.ndarray, at: int | np.ndarray = 0) -> np.ndarray:
    """Lagrange weights at `at` (one point, or one per row) for each row of distinct non-zero
    x's: (S, t) field elements."""
    xs = np.asarray(xs, dtype=np.uint64)
    return lagrange_points(xs, _points_per_row(xs, at))[:, 0, :]


def lagrange_points(xs: np.ndarray, ats: np.ndarray) -> np.ndarray:
    """Lagrange weights of each row of x's at each of its row's points: xs (S, t), ats (S, P)
    -> (S, P, t).

    w_pj = N_p / (a_p - x_j) * 1 / prod_{m != j} (x_j - x_m), with N_p = prod_m (a_p - x_m):
    the t^2 products of a row are made once for all its points, a slice of rows at a time so
    memory stays bounded (all 1,000 secrets of a 1,000-client round at t = 247 once took 4 GB
    and 14 s at once). The x's of a round are client indices + 1 and its points 0 or such x's,
    so every difference is a small integer whose inverse comes from one table (`SMALL_X`,
    when the table is smaller than the work); larger x's take Fermat inversions. A point
    equal to an x of its row has weight 1 there."""
    xs, ats = _check_points(xs, ats)
    out = np.empty((*ats.shape, xs.shape[1]), dtype=np.uint64)
    for rows, w in _weight_slices(xs, ats):
        out[rows] = w
    return out


def _check_points(xs: np.ndarray, ats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs = _check_xs(np.asarray(xs, dtype=np.uint64))
    ats = np.asarray(ats, dtype=np.uint64) % _P
    if xs.ndim != 2 or ats.ndim != 2 or ats.shape[0] != xs.shape[0]:
        raise ParameterError(f"x-sets (S, t) and points (S, P) must match: {xs.shape}, "
                             f"{ats.shape}")
    return xs, ats


def _weight_slices(xs: np.ndarray, ats: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """`lagrange_points` a slice of rows at a time: (rows, (s, P, t) weights)."""
    for sl, (inv_den, inv_to_a, n_p, hit) in _slices(xs, ats):
        w = mulmod(mulmod(n_p[:, :, None], inv_to_a), inv_den[:, None, :])
        yield sl, np.where(hit.any(axis=2, keepdims=True), hit.astype(np.uint64), w)


Parts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _slices(xs: np.ndarray, ats: np.ndarray) -> Iterator[tuple[slice, Parts]]:
    """The factors of the weights, a slice of rows at a time: 1 / prod_{m != j} (x_j - x_m)
    (s, t), 1 / (a_p - x_j) (s, P, t; 1 where a point is an x), N_p (s, P), and where a
    point is an x of its row (s, P, t)."""
    rows, t = xs.shape
    top = int(max(xs.max(initial=0), ats.max(initial=0)))
    # A table of inverses pays when it is smaller than the inversions it saves.
    small = top <= min(SMALL_X, rows * t * (t + ats.shape[1]))
    table = invmod(np.arange(1, top + 1, dtype=np.uint64)) if small else None
    step = max(1, CHUNK_ELEMENTS // max(1, t * max(t, ats.shape[1])))
    off_diagonal = ~np.eye(t, dtype=bool)[None, :, :]
    for lo in range(0, rows, step):
        x, a = xs[lo:lo + step].astype(np.int64), ats[lo:lo + step].astype(np.int64)
        inv_den = _prod_last_axis(np.where(
            off_diagonal, _inverse(x[:, :, None] - x[:, None, :], table), np.uint64(1)))
        to_a = a[:, :, None] - x[:, None, :]  # (s, P, t), signed
        hit = to_a == 0
        n_p = _prod_last_axis(_field(to_a))  # 0 where a point is an x of its row
        yield slice(lo, lo + step), (inv_den, _inverse(np.where(hit, 1, to_a), table), n_p,
                                     hit)


def _field(d: np.ndarray) -> np.ndarray:
    """Signed int64 differences (|d| < p) as field elements."""
    return np.where(d < 0, d + np.int64(P), d).astype(np.uint64)


def _inverse(d: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """Inverses of non-zero signed differences: from `table` (1..top) when there is one."""
    if table is None:
        return invmod(_field(d))
    inv = table[np.abs(d) - 1]
    return np.where(d < 0, _P - inv, inv)


def _points_per_row(xs: np.ndarray, at: int | np.ndarray) -> np.ndarray:
    a = np.asarray(at, dtype=np.uint64)
    rows = xs.shape[0] if xs.ndim == 2 else 0
    if a.ndim and a.shape != (rows,):
        raise ParameterError(f"one point per x-set: {a.shape} points, {rows} sets")
    return np.broadcast_to(a.reshape(-1, 1) if a.ndim else a, (rows, 1))


def combine(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Secrets from exactly t shares each: xs (S, t), ys (S, t, 5) -> (S, 32) uint8."""
    return limbs_to_secrets(interpolate(xs, ys, 0))


def interpolate(xs: np.ndarray, ys: np.ndarray, at: int | np.ndarray) -> np.ndarray:
    """The polynomials through (xs, ys), evaluated at `at` (one point, or one per row): (S, 5)
    field elements."""
    xs = np.asarray(xs, dtype=np.uint64)
    return evaluate(xs, ys, _points_per_row(xs, at))[:, 0, :]


def evaluate(xs: np.ndarray, ys: np.ndarray, ats: np.ndarray) -> np.ndarray:
    """The polynomials through (xs, ys) at each row's points ats (S, P): (S, P, 5)."""
    ys = np.asarray(ys, dtype=np.uint64)
    if ys.ndim != 3 or ys.shape[:2] != np.shape(xs) or ys.shape[2] != LIMBS:
        raise ParameterError(f"shares must be (S, t, {LIMBS}) matching x-sets {np.shape(xs)}")
    if np.any(ys >= _P):
        raise ParameterError("share values must be field elements below 2^61 - 1")
    xs, ats = _check_points(xs, ats)
    out = np.empty((*ats.shape, LIMBS), dtype=np.uint64)
    for rows, w in _weight_slices(xs, ats):
        for limb in range(LIMBS):
            prods = mulmod(w, ys[rows, None, :, limb])  # (s, P, t), each < 2^61
            lo = (prods & _LO32).sum(axis=2, dtype=np.uint64)  # t < 2^31 terms: no overflow
            hi = _fold((prods >> _S32).sum(axis=2, dtype=np.uint64))
            out[rows, :, limb] = addmod(mulmod(hi, np.uint64(1 << 32)), _fold(lo))
    return out


def consistent(xs: np.ndarray, ys: np.ndarray, probe_xs: np.ndarray, probe_ys: np.ndarray,
               entropy: Entropy = SYSTEM_ENTROPY) -> np.ndarray:
    """Whether every probe share (S, P) of each row lies on the polynomial through the row's
    base shares (S, t): (S,) bools.

    One random combination of the probes per row instead of every probe: with r_p random,
    sum_p r_p (f(a_p) - y_p) = 0 fails for a wrong share except with probability 1/p per
    limb, and sum_p r_p f(a_p) = sum_j y_j c_j sum_p r_p N_p / (a_p - x_j) costs P t products
    once per row, not per limb (`evaluate` at every probe costs five times that)."""
    xs, ats = _check_points(xs, probe_xs)
    rows = xs.shape[0]
    r = random_elements(ats.shape, entropy)
    ys, probe_ys = np.asarray(ys, dtype=np.uint64), np.asarray(probe_ys, dtype=np.uint64)
    ok = np.empty(rows, dtype=bool)
    for sl, (inv_den, inv_to_a, n_p, hit) in _slices(xs, ats):
        if hit.any():
            raise ParameterError("a probe share has the x of a base share")
        # sum_p r_p w_pj = c_j sum_p (r_p N_p) / (a_p - x_j)
        rn = mulmod(r[sl], n_p)
        combined = mulmod(_sum_axis(mulmod(inv_to_a, rn[:, :, None]), 1), inv_den)
        for limb in range(LIMBS):
            f = _sum_axis(mulmod(combined, ys[sl, :, limb]), 1)
            y = _sum_axis(mulmod(r[sl], probe_ys[sl, :, limb]), 1)
            bad = f != y
            ok[sl] = ~bad if limb == 0 else ok[sl] & ~bad
    return ok


def _sum_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """Sum mod p of field elements along `axis` (fewer than 2^31 terms)."""
    lo = (x & _LO32).sum(axis=axis, dtype=np.uint64)
    hi = _fold((x >> _S32).sum(axis=axis, dtype=np.uint64))
    return addmod(mulmod(hi, np.uint64(1 << 32)), _fold(lo))


def shares_to_bytes(shares: np.ndarray) -> list[bytes]:
    """(K, 5) shares of one secret as K wire strings of 40 bytes."""
    raw = np.ascontiguousarray(shares.astype("<u8")).view(np.uint8)
    return [bytes(row) for row in raw.reshape(-1, SHARE_BYTES)]


def shares_from_bytes(blobs: list[bytes]) -> np.ndarray:
    """Wire strings back to (K, 5) field elements; lengths and ranges are checked."""
    if any(len(b) != SHARE_BYTES for b in blobs):
        raise ParameterError(f"a share is {SHARE_BYTES} bytes")
    out = np.frombuffer(b"".join(blobs), dtype="<u8").astype(np.uint64).reshape(-1, LIMBS)
    if np.any(out >= _P):
        raise ParameterError("share value out of the field")
    return out


def _check_xs(xs: np.ndarray) -> np.ndarray:
    if xs.size and (np.any(xs == 0) or np.any(xs >= _P)):
        raise ParameterError("share x-coordinates must be in 1..p-1")
    rows = xs.reshape(-1, xs.shape[-1]) if xs.ndim else xs.reshape(1, 1)
    srt = np.sort(rows, axis=1)
    if np.any(srt[:, 1:] == srt[:, :-1]):
        raise ParameterError("share x-coordinates must be distinct")
    return xs
