"""Masks: seeds bound to one round and pair, and their ChaCha20 streams in the ring's words.

A pairwise seed is keyed BLAKE2b of the X25519 shared secret over (federation, round, config
digest, lower index, higher index); a self-mask seed is keyed BLAKE2b of the client's fresh
b_u over (federation, round, config digest, owner). Distinct rounds, pairs and purposes
(BLAKE2b salt) give distinct seeds, so no mask stream is ever reused. A stream is
`nacl.utils.randombytes_deterministic` (ChaCha20) read as the ring's words (`protocol/ring.py`:
little-endian, of the smallest width that holds b bits); masks are added in that word width
with wrap-around and reduced mod 2^b at the end, which is exact because 2^b divides the word
modulus.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.utils
import numpy as np

from genofed.protocol.ring import Ring, RingVector
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
class RoundContext:
    """What every derived seed and signature is bound to: federation, round, configuration."""

    federation: str
    round: int
    config: Digest

    def encode(self) -> bytes:
        """Canonical bytes of the context."""
        return Writer().text(self.federation).u64(self.round).fixed(self.config.raw).getvalue()


def _kdf(key: SharedSecret | SelfMaskSeed | GraphSeed, salt: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2b-256 with our personalization and a per-purpose salt (hashlib's BLAKE2b:
    libsodium's function, without PyNaCl's checks around each of a device's ~3k calls)."""
    return hashlib.blake2b(data, digest_size=32, key=key.raw, salt=salt,
                           person=_PERSON).digest()


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


def stream(seed: MaskSeed, length: int, ring: Ring) -> RingVector:
    """`length` raw (unreduced) words of the seed's ChaCha20 stream, read-only."""
    raw = nacl.utils.randombytes_deterministic(length * ring.word.itemsize, seed.raw)
    return np.frombuffer(raw, dtype=ring.word)


def expand(seed: MaskSeed, length: int, ring: Ring) -> RingVector:
    """The seed's mask: a ring vector of `length` uniform values."""
    return ring.reduce(stream(seed, length, ring).copy())


def apply_mask(acc: RingVector, seed: MaskSeed, ring: Ring, sign: int) -> None:
    """acc += sign * stream(seed), in place with word wrap-around (reduce mod 2^b later)."""
    s = stream(seed, acc.size, ring)
    if sign > 0:
        np.add(acc, s, out=acc)
    else:
        np.subtract(acc, s, out=acc)
