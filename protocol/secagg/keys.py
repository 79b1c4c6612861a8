"""Typed keys, seeds and signatures: no key is ever a bare `bytes` in our signatures.

Ed25519 (device identities, enrolled ahead of the round) signs every message; X25519 gives the
two per-round key pairs of each client, `c` to encrypt the shares it sends to its neighbours and
`s` to agree the pairwise mask seeds. Secret material never shows in a repr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import nacl.exceptions
import nacl.public
import nacl.secret
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


@dataclass(frozen=True)
class AgreementPublicKey(_Fixed):
    """An X25519 public key."""


@dataclass(frozen=True)
class AgreementSecretKey(_Secret):
    """An X25519 secret key."""

    def public(self) -> AgreementPublicKey:
        """The matching public key."""
        return AgreementPublicKey(bytes(nacl.public.PrivateKey(self.raw).public_key))

    def box(self, peer: AgreementPublicKey) -> nacl.secret.SecretBox:
        """Authenticated encryption with `peer`: NaCl's Box (X25519, XSalsa20-Poly1305)."""
        from nacl.bindings import crypto_box_beforenm

        try:
            return nacl.secret.SecretBox(crypto_box_beforenm(peer.raw, self.raw))
        except nacl.exceptions.CryptoError:
            raise ForgedMessage("peer's encryption key is a low-order point") from None

    def agree(self, peer: AgreementPublicKey) -> SharedSecret:
        """The raw X25519 shared secret with `peer`; low-order keys are refused."""
        from nacl.bindings import crypto_scalarmult

        try:
            return SharedSecret(crypto_scalarmult(self.raw, peer.raw))
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
