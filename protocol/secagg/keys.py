"""Typed keys, seeds and signatures: no key is ever a bare `bytes` in our signatures.

Ed25519 (device identities, enrolled ahead of the round) signs every message. Each client has
two per-round key pairs: `s` (X25519) agrees the pairwise mask seeds; `c` (a scalar and a
point of the prime-order Ed25519 group, libsodium's `crypto_core_ed25519`) agrees the key that
seals the shares it sends to each neighbour. `c` lives in a group with point addition so that
a client can prove, without its secret, that a revealed pairwise key is the right one
(`proof.py`). An advertised key that is not usable (a small-order or non-canonical X25519 key,
a `c` key outside the prime-order group) is refused by the aggregator on arrival, and a client
treats a peer with one as dropped: `usable` is the same public predicate on both sides.
Secret material never shows in a repr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing
import nacl.utils

from genofed.protocol.secagg.errors import ForgedMessage, ParameterError

Entropy = Callable[[int], bytes]
"""A source of cryptographic random bytes; `nacl.utils.random` unless a test pins one."""

SYSTEM_ENTROPY: Entropy = nacl.utils.random


@dataclass(frozen=True)
class _Fixed:
    """A fixed-size byte value with a name; the size is checked on construction."""

    SIZE: ClassVar[int] = 32
    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != self.SIZE:
            got = len(self.raw) if isinstance(self.raw, bytes) else type(self.raw).__name__
            raise ParameterError(f"{type(self).__name__} needs {self.SIZE} bytes, got {got}")


@dataclass(frozen=True)
class _Secret(_Fixed):
    """A fixed-size secret; its repr never shows the bytes."""

    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class Signature(_Fixed):
    """An Ed25519 signature."""

    SIZE: ClassVar[int] = 64


@dataclass(frozen=True)
class IdentityKey(_Fixed):
    """An enrolled device's (or the aggregator's) Ed25519 verify key."""

    def verify(self, message: bytes, signature: Signature) -> bool:
        """Whether `signature` is this identity's signature of `message`."""
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature.raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True


class SigningIdentity:
    """An Ed25519 signing key: a device's enrolled identity or the aggregator's."""

    def __init__(self, seed: IdentitySeed) -> None:
        self._key = nacl.signing.SigningKey(seed.raw)
        self.public = IdentityKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls, entropy: Entropy = SYSTEM_ENTROPY) -> SigningIdentity:
        """A fresh identity from `entropy`."""
        return cls(IdentitySeed(entropy(32)))

    def sign(self, message: bytes) -> Signature:
        """Sign `message` (detached)."""
        return Signature(self._key.sign(message).signature)

    def __repr__(self) -> str:
        return f"SigningIdentity(public={self.public.raw.hex()[:16]}...)"


@dataclass(frozen=True)
class IdentitySeed(_Secret):
    """The 32-byte seed of an Ed25519 identity."""


_P25519 = (1 << 255) - 19
_PROBE = bytes([9] * 32)  # any scalar: X25519 clamps it to a multiple of 8 below 2^255


@dataclass(frozen=True)
class AgreementPublicKey(_Fixed):
    """An X25519 public key."""

    @property
    def canonical(self) -> bool:
        """Whether u < p (so the top bit is clear): one encoding per key."""
        return int.from_bytes(self.raw, "little") < _P25519

    def usable(self) -> bool:
        """Whether it is a canonical key of large order. libsodium refuses a small-order key
        (the all-zero one among them) for every secret key alike: a clamped scalar is a
        multiple of 8 below the group order, so its product with a point is zero exactly
        when the point's order divides 8. One probe therefore answers for every peer, and
        a peer's `AgreementSecretKey.agree` with a canonical key fails exactly when this
        does."""
        if not self.canonical:
            return False
        try:
            sodium.crypto_scalarmult(_PROBE, self.raw)
        except nacl.exceptions.CryptoError:
            return False
        return True


@dataclass(frozen=True)
class AgreementSecretKey(_Secret):
    """An X25519 secret key."""

    def public(self) -> AgreementPublicKey:
        """The matching public key."""
        return AgreementPublicKey(bytes(nacl.public.PrivateKey(self.raw).public_key))

    def agree(self, peer: AgreementPublicKey) -> SharedSecret:
        """The raw X25519 shared secret with `peer`; a key that is not `usable` is refused."""
        if not peer.canonical:
            raise ForgedMessage("peer's mask key is not canonical")
        try:
            return SharedSecret(sodium.crypto_scalarmult(self.raw, peer.raw))
        except nacl.exceptions.CryptoError:
            raise ForgedMessage("peer's mask key is a low-order point") from None


@dataclass(frozen=True)
class AgreementKeyPair:
    """One X25519 key pair."""

    secret: AgreementSecretKey
    public: AgreementPublicKey

    @classmethod
    def generate(cls, entropy: Entropy = SYSTEM_ENTROPY) -> AgreementKeyPair:
        """A fresh key pair from `entropy`."""
        secret = AgreementSecretKey(entropy(32))
        return cls(secret, secret.public())


@dataclass(frozen=True)
class SealPublicKey(_Fixed):
    """A round's key for sealing shares to a client: a point of the prime-order Ed25519 group."""

    def usable(self) -> bool:
        """Whether it is the canonical encoding of a point of the prime-order subgroup, not the
        identity nor of small order (libsodium's `crypto_core_ed25519_is_valid_point`)."""
        return bool(sodium.crypto_core_ed25519_is_valid_point(self.raw))


@dataclass(frozen=True)
class SealSecretKey(_Secret):
    """A non-zero scalar modulo the group order L, little-endian."""

    def public(self) -> SealPublicKey:
        """The matching public key, scalar times the base point."""
        return SealPublicKey(sodium.crypto_scalarmult_ed25519_base_noclamp(self.raw))

    def agree(self, peer: SealPublicKey) -> PairKey:
        """The Diffie-Hellman point with `peer` (the same from either side). A key that is not
        `usable` is refused: libsodium checks the very same conditions before multiplying,
        and the product of a non-zero scalar and a point of prime order is never the
        identity."""
        try:
            return PairKey(sodium.crypto_scalarmult_ed25519_noclamp(self.raw, peer.raw))
        except nacl.exceptions.CryptoError:
            raise ForgedMessage("peer's sealing key is not a point of the prime-order "
                                "group") from None


@dataclass(frozen=True)
class SealKeyPair:
    """One sealing key pair."""

    secret: SealSecretKey
    public: SealPublicKey

    @classmethod
    def generate(cls, entropy: Entropy = SYSTEM_ENTROPY) -> SealKeyPair:
        """A fresh key pair from `entropy` (64 bytes reduced mod L: uniform to 2^-250)."""
        while True:
            scalar = sodium.crypto_core_ed25519_scalar_reduce(entropy(64))
            if any(scalar):
                secret = SealSecretKey(scalar)
                return cls(secret, secret.public())


@dataclass(frozen=True)
class PairKey(_Secret):
    """The Diffie-Hellman point of two clients' sealing keys: it seals the shares between the
    two. A recipient that accuses the sender reveals it, with a proof (`proof.py`)."""


@dataclass(frozen=True)
class SharedSecret(_Secret):
    """An X25519 shared secret; only ever used as a BLAKE2b key."""


@dataclass(frozen=True)
class SelfMaskSeed(_Secret):
    """A client's fresh per-round secret b_u, from which its self mask is derived."""


@dataclass(frozen=True)
class ShareValue(_Secret):
    """One holder's Shamir share of a 32-byte secret: five GF(2^61 - 1) limbs, 40 bytes."""

    SIZE: ClassVar[int] = 40


@dataclass(frozen=True)
class MaskSeed(_Secret):
    """The key of one ChaCha20 mask stream."""


@dataclass(frozen=True)
class GraphSeed(_Fixed):
    """The public seed of a round's neighbour-graph permutation."""


@dataclass(frozen=True)
class Digest(_Fixed):
    """A 32-byte BLAKE2b digest (of a round configuration or a survivor set)."""
