"""Masks: the ring Z_(2^b), seeds bound to one round and pair, and their ChaCha20 streams.

A pairwise seed is keyed BLAKE2b of the X25519 shared secret over (federation, round, config
digest, lower index, higher index); a self-mask seed is keyed BLAKE2b of the client's fresh
b_u over (federation, round, config digest, owner). Distinct rounds, pairs and purposes
(BLAKE2b salt) give distinct seeds, so no mask stream is ever reused. A stream is
`nacl.utils.randombytes_deterministic` (ChaCha20) read as little-endian words of the smallest
width that holds b bits; sums are taken in that word width with wrap-around and reduced
mod 2^b at the end, which is exact because 2^b divides the word modulus.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.encoding
import nacl.hash
import nacl.utils
import numpy as np

from genofed.protocol.secagg.encoding import Writer
from genofed.protocol.secagg.errors import ParameterError
from genofed.protocol.secagg.keys import (
    AgreementPublicKey,
    AgreementSecretKey,
    Digest,
    GraphSeed,
    MaskSeed,
    SelfMaskSeed,
    SharedSecret,
)

_PERSON = b"genofed-secagg1"  # BLAKE2b personalization (<= 16 bytes)
_PAIR_SALT, _SELF_SALT, _GRAPH_SALT = b"pair-mask", b"self-mask", b"graph"


@dataclass(frozen=True)
class Ring:
    """Z_(2^bits): masked values, inputs and the sum live here."""

    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 64:
            raise ParameterError(f"ring bits must be an integer in 1..64, got {self.bits!r}")

    @property
    def word(self) -> np.dtype[np.unsignedinteger]:
        """Little-endian word dtype of the smallest width holding `bits`."""
        width = next(w for w in (8, 16, 32, 64) if self.bits <= w)
        return np.dtype(f"<u{width // 8}")

    @property
    def mask(self) -> int:
        """2^bits - 1."""
        return (1 << self.bits) - 1

    def reduce(self, words: np.ndarray) -> np.ndarray:
        """Reduce word-width values mod 2^bits, in place."""
        if self.bits < 8 * self.word.itemsize:
            np.bitwise_and(words, self.word.type(self.mask), out=words)
        return words

    def to_words(self, x: np.ndarray, what: str = "input") -> np.ndarray:
        """An uint64 vector of ring elements as a fresh word-width array; out-of-ring refused."""
        x = np.asarray(x)
        if x.ndim != 1 or x.dtype != np.uint64:
            raise ParameterError(f"{what} must be a one-dimensional uint64 array, got "
                                 f"{x.dtype} of shape {x.shape}")
        if self.bits < 64 and x.size and int(x.max()) > self.mask:
            raise ParameterError(f"{what} holds values >= 2^{self.bits}")
        return x.astype(self.word)

    def to_uint64(self, words: np.ndarray) -> np.ndarray:
        """Word-width ring elements as uint64."""
        return words.astype(np.uint64)


@dataclass(frozen=True)
class RoundContext:
    """What every derived seed and signature is bound to: federation, round, configuration."""

    federation: str
    round: int
    config: Digest

    def encode(self) -> bytes:
        """Canonical bytes of the context."""
        return Writer().text(self.federation).u64(self.round).fixed(self.config.raw).getvalue()


def _kdf(key: SharedSecret | SelfMaskSeed | GraphSeed, salt: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2b-256 with our personalization and a per-purpose salt."""
    return nacl.hash.blake2b(data, digest_size=32, key=key.raw, salt=salt, person=_PERSON,
                             encoder=nacl.encoding.RawEncoder)


def pair_seed(secret: AgreementSecretKey, peer: AgreementPublicKey, ctx: RoundContext,
              a: int, b: int) -> MaskSeed:
    """The seed of the mask shared by clients `a` and `b` (symmetric in the pair)."""
    if a == b:
        raise ParameterError(f"client {a} has no pairwise mask with itself")
    lo, hi = min(a, b), max(a, b)
    data = Writer().fixed(ctx.encode()).u32(lo).u32(hi).getvalue()
    return MaskSeed(_kdf(secret.agree(peer), _PAIR_SALT, data))


def self_seed(b: SelfMaskSeed, ctx: RoundContext, owner: int) -> MaskSeed:
    """The seed of client `owner`'s self mask."""
    return MaskSeed(_kdf(b, _SELF_SALT, Writer().fixed(ctx.encode()).u32(owner).getvalue()))


def graph_stream_key(seed: GraphSeed, ctx: RoundContext) -> MaskSeed:
    """The ChaCha20 key that drives a round's neighbour-graph permutation."""
    return MaskSeed(_kdf(seed, _GRAPH_SALT, ctx.encode()))


def stream(seed: MaskSeed, length: int, ring: Ring) -> np.ndarray:
    """`length` raw (unreduced) words of the seed's ChaCha20 stream, read-only."""
    raw = nacl.utils.randombytes_deterministic(length * ring.word.itemsize, seed.raw)
    return np.frombuffer(raw, dtype=ring.word)


def expand(seed: MaskSeed, length: int, ring: Ring) -> np.ndarray:
    """The seed's mask: `length` uniform elements of the ring, as uint64."""
    return ring.to_uint64(ring.reduce(stream(seed, length, ring).copy()))


def apply_mask(acc: np.ndarray, seed: MaskSeed, ring: Ring, sign: int) -> None:
    """acc += sign * stream(seed), in place with word wrap-around (reduce mod 2^b later)."""
    s = stream(seed, acc.size, ring)
    if sign > 0:
        np.add(acc, s, out=acc)
    else:
        np.subtract(acc, s, out=acc)
