"""Bit-packing of ring vectors: `bits` bits per coordinate on the wire, not 32 or 64.

Coordinate i occupies bits [i*bits, (i+1)*bits) of the payload, least significant bit first
(bit k of the stream is bit k % 8 of byte k // 8); the last byte is padded with zero bits, and
an unpacker refuses a payload whose padding is not zero, so each vector has one encoding only.
Packing applies to a masked vector, after SecAgg+ has added its masks: it is a wire format for
one message, not a stage of the sum, so it is not in the `Pipeline`. Vectors go in and come out
in the ring's word dtype (`protocol/ring.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from genofed.protocol.codec_stages import CodecError, check_int
from genofed.protocol.ring import Ring, RingVector

# Coordinates per chunk: a multiple of 8, so every chunk ends on a byte boundary, and small
# enough that the bit matrix of one chunk (CHUNK x 64 bytes at most) stays a few megabytes.
CHUNK = 1 << 16


def packed_size(count: int, bits: int) -> int:
    """Bytes that `count` coordinates of `bits` bits take on the wire."""
    return (check_int("count", count, 0) * Ring(bits).bits + 7) // 8


def pack_bits(values: npt.ArrayLike, bits: int) -> bytes:
    """Pack a ring vector of Z_(2^bits) into `packed_size(len(values), bits)` bytes."""
    ring = Ring(bits)
    v = np.ascontiguousarray(ring.check(values))
    width = (bits + 7) // 8  # low bytes of each little-endian word that hold its bits
    le = v.view(np.uint8).reshape(-1, ring.word.itemsize)[:, :width]
    if bits % 8 == 0:
        return le.tobytes()
    parts = []
    for start in range(0, len(v), CHUNK):
        bitmat = np.unpackbits(le[start:start + CHUNK], axis=1, bitorder="little")[:, :bits]
        parts.append(np.packbits(bitmat.ravel(), bitorder="little").tobytes())
    return b"".join(parts)


def unpack_bits(data: bytes, bits: int, count: int) -> RingVector:
    """The ring vector that `pack_bits` packed into `data`; refuses a wrong size or padding."""
    ring = Ring(bits)
    expect = packed_size(count, bits)
    if len(data) != expect:
        raise CodecError(f"packed vector of {len(data)} bytes, expected {expect} "
                         f"for {count} coordinates of {bits} bits")
    raw = np.frombuffer(data, dtype=np.uint8)
    width = (bits + 7) // 8
    le = np.zeros((count, ring.word.itemsize), dtype=np.uint8)
    if bits % 8 == 0:
        le[:, :width] = raw.reshape(count, width)
        return le.view(ring.word).ravel()
    used = count * bits
    if used % 8 and raw[-1] >> (used % 8):
        raise CodecError(f"packed vector has non-zero padding bits in its last byte {raw[-1]}")
    step = CHUNK * bits // 8  # bytes per chunk of coordinates
    for start in range(0, count, CHUNK):
        rows = min(CHUNK, count - start)
        chunk = raw[start // CHUNK * step:][: (rows * bits + 7) // 8]
        bitmat = np.unpackbits(chunk, bitorder="little")[: rows * bits].reshape(rows, bits)
        le[start:start + rows, :width] = np.packbits(bitmat, axis=1, bitorder="little")
    return le.view(ring.word).ravel()


@dataclass(frozen=True)
class BitPacking:
    """The wire form of `count`-long ring vectors in Z_(2^bits)."""

    bits: int
    count: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", Ring(self.bits).bits)
        object.__setattr__(self, "count", check_int("count", self.count, 0))

    @property
    def size(self) -> int:
        """Bytes of one packed vector."""
        return packed_size(self.count, self.bits)

    def encode(self, values: RingVector) -> bytes:
        """Pack one ring vector of `count` coordinates."""
        if np.shape(values) != (self.count,):
            raise CodecError(f"expected {self.count} coordinates, got shape {np.shape(values)}")
        return pack_bits(values, self.bits)

    def decode(self, data: bytes) -> RingVector:
        """Unpack one ring vector."""
        return unpack_bits(data, self.bits, self.count)
