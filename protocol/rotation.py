"""Random rotation of an update: random signs, then an orthonormal fast Walsh-Hadamard transform.

The rotation spreads a vector's norm over all coordinates, so that (for inputs that do not
depend on the signs) no coordinate holds much more than ||x|| / sqrt(d); that is what lets the
probabilistic rule for b in `codec.py` use fewer bits. Every device of a round uses the same
seed, so the rotation is one orthogonal matrix R and the aggregator undoes it on the sum.

No padding to a power of two. The usual construction pads d up to the next power of two, which
sends up to twice as many coordinates (d = 10^5 pads to 131072: 31% more bytes on the wire).
Here, with N the largest power of two <= d, two windows of N coordinates cover the vector,
[0, N) and [d - N, d), and each is rotated in turn, with its own signs:

    y = (H_N D_2 on [d-N, d)) o (H_N D_1 on [0, N)) x

Each factor is orthogonal on the whole vector, so R is orthogonal, exactly d long, and R^-1 is
the two steps backwards (H_N / sqrt(N) is its own inverse). Every output coordinate is a
Rademacher sum over a window of N >= d/2 coordinates whose norm is <= ||x||, which is all the
tail bound needs (window 2 holds whatever window 1 left in the overlap; conditioned on D_1, its
signs are still fresh). When d is a power of two there is one window, the classic randomized
Hadamard transform.

The signs are the bits of SHAKE-256 over a domain tag and the round's seed, so a Pi and an x86
aggregator on different numpy versions derive the same R (numpy's Generator streams are not
promised to stay the same across versions).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from genofed.protocol.codec_stages import CodecError, Floats, check_int

_DOMAIN = b"genofed/rotation/v1\x00"
MIN_SEED_BYTES = 16
MAX_SEED_BYTES = 64


def fwht(x: np.ndarray) -> Floats:
    """The orthonormal Walsh-Hadamard transform H x / sqrt(len(x)); it is its own inverse."""
    y = np.array(x, dtype=np.float64)  # a copy, transformed in place
    m = y.size
    if y.ndim != 1 or m == 0 or m & (m - 1):
        raise CodecError(f"fwht needs a 1-D array whose length is a power of two, got {y.shape}")
    h = 1
    while h < m:  # log2(m) butterfly levels, each one vectorized over all pairs
        v = y.reshape(-1, 2, h)
        top = v[:, 0, :].copy()
        v[:, 0, :] += v[:, 1, :]
        np.subtract(top, v[:, 1, :], out=v[:, 1, :])
        h *= 2
    y *= 1.0 / np.sqrt(m)
    return y


def rotation_signs(seed: bytes, count: int) -> Floats:
    """`count` signs (+1.0 / -1.0) drawn from SHAKE-256 over the domain tag and `seed`."""
    raw = hashlib.shake_256(_DOMAIN + seed).digest((count + 7) // 8)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:count]
    return 1.0 - 2.0 * bits.astype(np.float64)


@dataclass(frozen=True)
class Rotation:
    """The randomized Hadamard rotation of `dim`-long vectors under one round's `seed`."""

    dim: int
    seed: bytes = field(repr=False)
    _signs: Floats = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim", check_int("dim", self.dim, 1))
        if not isinstance(self.seed, bytes) or not (
                MIN_SEED_BYTES <= len(self.seed) <= MAX_SEED_BYTES):
            got = len(self.seed) if isinstance(self.seed, bytes) else type(self.seed).__name__
            raise CodecError(f"rotation seed must be {MIN_SEED_BYTES}-{MAX_SEED_BYTES} bytes, "
                             f"got {got}")
        count = self.window if self.window == self.dim else 2 * self.window
        object.__setattr__(self, "_signs", rotation_signs(self.seed, count))

    @property
    def window(self) -> int:
        """N: the largest power of two <= dim, the length each Hadamard transform acts on."""
        return 1 << (self.dim.bit_length() - 1)

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Floats:
        """R x: signs then WHT on [0, N), then (if dim > N) signs then WHT on [dim-N, dim)."""
        y = self._check(x)
        n, tail = self.window, self.dim - self.window
        y[:n] = fwht(self._signs[:n] * y[:n])
        if tail:
            y[tail:] = fwht(self._signs[n:] * y[tail:])
        return y

    def decode(self, y: np.ndarray, n: int = 1) -> Floats:
        """R^-1 y = R^T y: the two steps backwards (linear, so valid on a sum)."""
        x = self._check(y)
        w, tail = self.window, self.dim - self.window
        if tail:
            x[tail:] = self._signs[w:] * fwht(x[tail:])
        x[:w] = self._signs[:w] * fwht(x[:w])
        return x

    def _check(self, x: np.ndarray) -> Floats:
        v = np.array(x, dtype=np.float64)
        if v.shape != (self.dim,):
            raise CodecError(f"rotation of dim {self.dim} got an array of shape {v.shape}")
        return v
