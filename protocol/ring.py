"""The ring Z_(2^b) that the codec encodes into and SecAgg+ masks and sums in, 1 <= b <= 64.

A ring vector (`RingVector`) is a 1-D numpy array in the ring's word dtype: the smallest
little-endian unsigned integer of 8, 16, 32 or 64 bits that holds b bits, every value in
[0, 2^b). It is the one form a vector of the ring takes from the device's codec to the
aggregator's decode: `Pipeline.encode` makes it, the SecAgg+ client masks it in place,
`MaskedInput` packs it at b bits a value and unpacks it back, the server sums into it, and
`Pipeline.decode_sum` reads the sum from it. Arithmetic runs in the word width and wraps mod
2^w; 2^b divides 2^w, so masking the low b bits afterwards (`reduce`) gives the result in
Z_(2^b) exactly. Signed integers enter by two's complement (`wrap`) and leave sign-extended
(`unwrap`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from genofed.errors import LocalInputError

RingVector = npt.NDArray[np.unsignedinteger[Any]]
Signed = npt.NDArray[np.int64]

MAX_BITS = 64


class RingError(LocalInputError):
    """A ring width, or a vector that is not one of the ring's; the text names the value.

    Its own class rather than CodecError or ParameterError: the codec and SecAgg+ both import
    this module, so it imports neither. A caller checking bytes that came off the network (a
    masked input) turns it into MalformedMessage.
    """


@dataclass(frozen=True)
class Ring:
    """Z_(2^bits): its word dtype, and the checks and arithmetic of its vectors."""

    bits: int

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise RingError(f"bits must be an integer, got {self.bits!r}")
        if not 1 <= self.bits <= MAX_BITS:
            raise RingError(f"bits must be in [1, {MAX_BITS}], got {self.bits}")
        object.__setattr__(self, "bits", int(self.bits))

    @property
    def word(self) -> np.dtype[np.unsignedinteger[Any]]:
        """The little-endian unsigned dtype of the smallest width (8, 16, 32, 64) holding bits."""
        width = next(w for w in (8, 16, 32, 64) if self.bits <= w)
        return np.dtype(f"<u{width // 8}")

    @property
    def mask(self) -> int:
        """2^bits - 1."""
        return (1 << self.bits) - 1

    @property
    def fills_word(self) -> bool:
        """Whether bits is the word's whole width, so that every word is in the ring."""
        return self.bits == 8 * self.word.itemsize

    def zeros(self, length: int) -> RingVector:
        """`length` zeros of the ring."""
        return np.zeros(length, dtype=self.word)

    def reduce(self, words: RingVector) -> RingVector:
        """Reduce word-width values mod 2^bits in place, and return them."""
        if not self.fills_word:
            np.bitwise_and(words, self.word.type(self.mask), out=words)
        return words

    def check(self, values: npt.ArrayLike, what: str = "ring vector") -> RingVector:
        """`values` in the word dtype (the same array if it is already) if it is a ring vector."""
        arr = np.asarray(values)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.unsignedinteger):
            raise RingError(f"{what} must be a 1-D unsigned integer array, got "
                            f"{arr.dtype}{arr.shape}")
        if self.bits < 8 * arr.itemsize and arr.size and int(arr.max()) >> self.bits:
            raise RingError(f"{what} holds {int(arr.max())}, not below 2^{self.bits}")
        return arr.astype(self.word, copy=False)

    def wrap(self, signed: npt.ArrayLike) -> RingVector:
        """Integers in [-2^(bits-1), 2^(bits-1)) to the ring by two's complement."""
        v = np.ascontiguousarray(signed, dtype=np.int64)
        if v.ndim != 1:
            raise RingError(f"a ring vector is 1-D, got shape {v.shape}")
        if self.bits < MAX_BITS and v.size:
            half = 1 << (self.bits - 1)
            lo, hi = int(v.min()), int(v.max())
            if lo < -half or hi >= half:
                bad = lo if lo < -half else hi
                raise RingError(f"value {bad} does not fit in {self.bits} signed bits")
        return self.reduce(v.astype(self.word))  # a narrowing cast keeps the low bits

    def unwrap(self, values: npt.ArrayLike, what: str = "ring vector") -> Signed:
        """Ring values to [-2^(bits-1), 2^(bits-1)) (sign-extended): a sum, if it did not wrap."""
        shift = MAX_BITS - self.bits  # move bit b-1 to bit 63, shift back with the sign
        r = self.check(values, what).astype(np.uint64)
        r <<= np.uint64(shift)
        return r.view(np.int64) >> np.int64(shift)

    def sum(self, vectors: Iterable[npt.ArrayLike]) -> RingVector:
        """The sum mod 2^bits of equally long ring vectors: what the aggregator holds."""
        total: RingVector | None = None
        for i, v in enumerate(vectors):
            r = self.check(v, f"vector {i}")
            if total is None:
                total = r.copy()
            elif r.shape != total.shape:
                raise RingError(f"vector {i} has shape {r.shape}, the others {total.shape}")
            else:
                np.add(total, r, out=total)  # wraps mod 2^w, and 2^bits divides 2^w
        if total is None:
            raise RingError("a ring sum needs at least one vector")
        return self.reduce(total)
