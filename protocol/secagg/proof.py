"""A proof that a revealed pairwise key is the right one, without the secret key behind it.

A client i that cannot open the shares neighbour j sealed to it shows the aggregator the key
that seals them, K = c_i * C_j (its sealing secret times j's advertised sealing key), and
proves that K has the same discrete logarithm to base C_j as its own advertised key
C_i = c_i * B has to the base point B: Chaum and Pedersen's proof of equality of discrete
logarithms ("Wallet databases with observers", CRYPTO 1992), made non-interactive by
Fiat-Shamir over every point and the statement's context, in libsodium's prime-order Ed25519
group. Prover: random r, R1 = r B, R2 = r C_j, e = H(context, C_i, C_j, K, R1, R2),
z = r + e c_i (mod L). Verifier: z B = R1 + e C_i and z C_j = R2 + e K, with every point
checked to lie in the prime-order subgroup first. Without c_i, a K that is not c_i C_j passes
with probability 1/L; the proof says nothing about c_i beyond what K does (honest-verifier
zero knowledge).

Why reveal K and not c_i: K opens only what i and j sealed to each other, which j knows
anyway, so an accusation costs nothing in the threshold analysis; c_i would open every share
sent to i this round (see `blame.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash

from genofed.protocol.secagg.encoding import Writer
from genofed.protocol.secagg.keys import (
    SYSTEM_ENTROPY,
    Entropy,
    PairKey,
    SealPublicKey,
    SealSecretKey,
)

L = (1 << 252) + 27742317777372353535851937790883648493  # the prime order of the group
PROOF_BYTES = 128


@dataclass(frozen=True)
class KeyProof:
    """A revealed pairwise key K and the proof (R1, R2, z) that it is c_i * C_j."""

    key: PairKey
    r1: bytes
    r2: bytes
    z: bytes

    def encode(self) -> bytes:
        """K | R1 | R2 | z, 128 bytes."""
        return self.key.raw + self.r1 + self.r2 + self.z

    @classmethod
    def decode(cls, raw: bytes) -> KeyProof:
        """The inverse of `encode` (any 128 bytes parse; `verify` judges them)."""
        if len(raw) != PROOF_BYTES:
            raise ValueError(f"a key proof is {PROOF_BYTES} bytes, got {len(raw)}")
        return cls(PairKey(raw[:32]), raw[32:64], raw[64:96], raw[96:])


def prove(secret: SealSecretKey, peer: SealPublicKey, context: bytes,
          entropy: Entropy = SYSTEM_ENTROPY) -> KeyProof:
    """Reveal secret * peer and prove it; `context` binds the proof to one round and pair."""
    own, key = secret.public(), secret.agree(peer)
    while True:
        r = sodium.crypto_core_ed25519_scalar_reduce(entropy(64))
        if not any(r):
            continue
        r1 = sodium.crypto_scalarmult_ed25519_base_noclamp(r)
        r2 = sodium.crypto_scalarmult_ed25519_noclamp(r, peer.raw)
        e = _challenge(context, own, peer, key, r1, r2)
        z = sodium.crypto_core_ed25519_scalar_add(
            r, sodium.crypto_core_ed25519_scalar_mul(e, secret.raw))
        if any(z):
            return KeyProof(key, r1, r2, z)


def verify(own: SealPublicKey, peer: SealPublicKey, proof: KeyProof, context: bytes) -> bool:
    """Whether `proof.key` is provably (log_B own) * peer, for this context."""
    points = (own.raw, peer.raw, proof.key.raw, proof.r1, proof.r2)
    if not all(sodium.crypto_core_ed25519_is_valid_point(p) for p in points):
        return False
    z = int.from_bytes(proof.z, "little")
    if not 0 < z < L:  # canonical and non-zero: one proof, one encoding
        return False
    e = _challenge(context, own, peer, proof.key, proof.r1, proof.r2)
    try:
        left1 = sodium.crypto_scalarmult_ed25519_base_noclamp(proof.z)
        right1 = sodium.crypto_core_ed25519_add(
            proof.r1, sodium.crypto_scalarmult_ed25519_noclamp(e, own.raw))
        left2 = sodium.crypto_scalarmult_ed25519_noclamp(proof.z, peer.raw)
        right2 = sodium.crypto_core_ed25519_add(
            proof.r2, sodium.crypto_scalarmult_ed25519_noclamp(e, proof.key.raw))
    except nacl.exceptions.CryptoError:  # e = 0 (probability 1/L): an identity on the way
        return False
    return left1 == right1 and left2 == right2  # canonical encodings: bytes equal iff points


def _challenge(context: bytes, own: SealPublicKey, peer: SealPublicKey, key: PairKey,
               r1: bytes, r2: bytes) -> bytes:
    data = Writer().blob(context).fixed(own.raw).fixed(peer.raw).fixed(key.raw).fixed(r1) \
        .fixed(r2).getvalue()
    wide = nacl.hash.blake2b(data, digest_size=64, person=b"genofed-dleq",
                             encoder=nacl.encoding.RawEncoder)
    return bytes(sodium.crypto_core_ed25519_scalar_reduce(wide))
