"""The messages of a round, frozen dataclasses with one explicit byte encoding each.

Wire: b"GSA2" | core | Ed25519 signature (64 bytes). The signature covers
b"genofed/secagg/v2\\0" | core (in MaskedInput with the packed values replaced by their
BLAKE2b-256), and core always starts with the header: kind (u8), stage (u8),
federation (text), round (u64), configuration digest (32 bytes), sender (u32 roster index, or
SERVER). So every signature binds federation, round, configuration, stage and sender, and a
signature of one kind of message never verifies as another.

Version 2 (blame for provable disruption) changed three things, so that a recipient can prove
a neighbour's shares bad (`blame.py`): the `c` key of AdvertiseKeys is a point of the Ed25519
group (`SealPublicKey`), each sealed bundle carries its sender's own signature over
(round, sender, recipient, ciphertext) in EncryptedShares and ShareDelivery alike, and a
MaskedInput may end with accusations (none: the version 1 body, byte for byte).

Client -> server: AdvertiseKeys, EncryptedShares, MaskedInput (with any accusations),
ConsistencySignature, UnmaskShares. Server -> client(s): KeyList, ShareDelivery, SurvivorList,
UnmaskRequest.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, TypeVar

import nacl.encoding
import nacl.hash
import numpy as np

from genofed.protocol.codec_packing import pack_bits, packed_size, unpack_bits
from genofed.protocol.codec_stages import CodecError
from genofed.protocol.ring import Ring, RingError, RingVector
from genofed.protocol.secagg.config import MAX_LENGTH
from genofed.protocol.secagg.encoding import Reader, Writer
from genofed.protocol.secagg.errors import MalformedMessage
from genofed.protocol.secagg.keys import (
    AgreementPublicKey,
    Digest,
    IdentityKey,
    SealPublicKey,
    ShareValue,
    Signature,
    SigningIdentity,
)
from genofed.protocol.secagg.prg import RoundContext
from genofed.protocol.secagg.proof import PROOF_BYTES, KeyProof
from genofed.protocol.secagg.shamir import SHARE_BYTES

MAGIC = b"GSA2"
DOMAIN = b"genofed/secagg/v2\x00"
SEALED_DOMAIN = b"genofed/secagg/v2/sealed\x00"
SERVER = 0xFFFFFFFF
MAX_CLIENTS = 1 << 16
MAX_CIPHERTEXT = 512
_SIG = 64


class Stage(IntEnum):
    """The stages of Bonawitz et al. 2017, in order."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASKING = 4
    DONE = 5


class Kind(IntEnum):
    """Message types; each belongs to one stage."""

    ADVERTISE_KEYS = 1
    KEY_LIST = 2
    ENCRYPTED_SHARES = 3
    SHARE_DELIVERY = 4
    MASKED_INPUT = 5
    SURVIVOR_LIST = 6
    CONSISTENCY_SIGNATURE = 7
    UNMASK_REQUEST = 8
    UNMASK_SHARES = 9


@dataclass(frozen=True)
class Header:
    """Who sent a message, in which federation, round and configuration."""

    federation: str
    round: int
    config: Digest
    sender: int

    @classmethod
    def of(cls, ctx: RoundContext, sender: int) -> Header:
        """The header of a message from `sender` in the round of `ctx`."""
        return cls(ctx.federation, ctx.round, ctx.config, sender)

    @property
    def context(self) -> RoundContext:
        """The round this header names."""
        return RoundContext(self.federation, self.round, self.config)


M = TypeVar("M", bound="Message")


@dataclass(frozen=True)
class Message:
    """Common header, signature and byte encoding of every message."""

    KIND: ClassVar[Kind]
    STAGE: ClassVar[Stage]
    header: Header
    signature: Signature = field(repr=False)

    def _write(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        raise NotImplementedError

    def _write_header(self, w: Writer) -> Writer:
        h = self.header
        return w.u8(self.KIND).u8(self.STAGE).text(h.federation).u64(h.round) \
            .fixed(h.config.raw).u32(h.sender)

    def _write_signed(self, w: Writer) -> None:
        """The body as signed: as sent, unless a message signs a digest of a bulk part."""
        self._write(w)

    def core(self) -> bytes:
        """Header and body as sent."""
        w = self._write_header(Writer())
        self._write(w)
        return w.getvalue()

    def signed_bytes(self) -> bytes:
        """Exactly what the signature covers: DOMAIN, the header and the signed body."""
        w = self._write_header(Writer().fixed(DOMAIN))
        self._write_signed(w)
        return w.getvalue()

    def encode(self) -> bytes:
        """The wire bytes."""
        return MAGIC + self.core() + self.signature.raw

    def verify(self, key: IdentityKey) -> bool:
        """Whether the signature is `key`'s."""
        return key.verify(self.signed_bytes(), self.signature)

    @classmethod
    def create(cls: type[M], identity: SigningIdentity, header: Header, **body: object) -> M:
        """A message with `body`, signed by `identity`."""
        unsigned = cls(header=header, signature=Signature(bytes(_SIG)), **body)
        return dataclasses.replace(unsigned, signature=identity.sign(unsigned.signed_bytes()))

    @classmethod
    def decode(cls: type[M], data: bytes) -> M:
        """Parse wire bytes as this message type (signature not yet checked)."""
        msg = decode(data)
        if not isinstance(msg, cls):
            raise MalformedMessage(f"expected {cls.__name__}, got {type(msg).__name__}")
        return msg


@dataclass(frozen=True)
class Sealed:
    """An encrypted share bundle, the peer at its other end, and the signature of its sender
    over (round, sender, recipient, ciphertext): relayed with the bundle, it lets the
    recipient prove what the sender sent it, and lets no one else pass a bundle off as it."""

    peer: int
    ciphertext: bytes = field(repr=False)
    signature: Signature = field(repr=False)

    @classmethod
    def create(cls, identity: SigningIdentity, ctx: RoundContext, sender: int, recipient: int,
               ciphertext: bytes) -> Sealed:
        """`sender`'s bundle for `recipient`, as it puts it into its EncryptedShares."""
        return cls(recipient, ciphertext,
                   identity.sign(sealed_bytes(ctx, sender, recipient, ciphertext)))

    def verify(self, key: IdentityKey, ctx: RoundContext, sender: int, recipient: int) -> bool:
        """Whether `key` signed this bundle as sent from `sender` to `recipient`."""
        return key.verify(sealed_bytes(ctx, sender, recipient, self.ciphertext),
                          self.signature)


def sealed_bytes(ctx: RoundContext, sender: int, recipient: int, ciphertext: bytes) -> bytes:
    """What the sender of a bundle signs (a domain of its own: never a message's bytes)."""
    return Writer().fixed(SEALED_DOMAIN).fixed(ctx.encode()).u32(sender).u32(recipient) \
        .blob(ciphertext).getvalue()


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Stage 0, client: the round's two X25519 public keys."""

    KIND: ClassVar[Kind] = Kind.ADVERTISE_KEYS
    STAGE: ClassVar[Stage] = Stage.ADVERTISE_KEYS
    c_pk: SealPublicKey = field(kw_only=True)
    s_pk: AgreementPublicKey = field(kw_only=True)

    def _write(self, w: Writer) -> None:
        w.fixed(self.c_pk.raw).fixed(self.s_pk.raw)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"c_pk": SealPublicKey(r.fixed(32)), "s_pk": AgreementPublicKey(r.fixed(32))}


@dataclass(frozen=True)
class KeyList(Message):
    """Stage 1 request, server: the signed adverts of the recipient's live neighbours."""

    KIND: ClassVar[Kind] = Kind.KEY_LIST
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    recipient: int = field(kw_only=True)
    adverts: tuple[AdvertiseKeys, ...] = field(kw_only=True)

    def _write(self, w: Writer) -> None:
        w.u32(self.recipient).u32(len(self.adverts))
        for a in self.adverts:
            w.blob(a.encode())

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        recipient = r.u32()
        adverts = tuple(AdvertiseKeys.decode(r.blob(1024)) for _ in range(r.count(MAX_CLIENTS)))
        return {"recipient": recipient, "adverts": adverts}


def _write_sealed(w: Writer, items: tuple[Sealed, ...]) -> None:
    w.u32(len(items))
    for s in items:
        w.u32(s.peer).blob(s.ciphertext).fixed(s.signature.raw)


def _read_sealed(r: Reader) -> tuple[Sealed, ...]:
    return tuple(Sealed(r.u32(), r.blob(MAX_CIPHERTEXT), Signature(r.fixed(_SIG)))
                 for _ in range(r.count(MAX_CLIENTS)))


@dataclass(frozen=True)
class Accusation:
    """A recipient's claim that `accused` sealed it shares that do not open, with the pairwise
    key that proves it (`proof.py`, checked against both advertised sealing keys)."""

    accused: int
    proof: KeyProof = field(repr=False)


@dataclass(frozen=True)
class EncryptedShares(Message):
    """Stage 1, client: its shares for each neighbour, each sealed to that neighbour."""

    KIND: ClassVar[Kind] = Kind.ENCRYPTED_SHARES
    STAGE: ClassVar[Stage] = Stage.SHARE_KEYS
    sealed: tuple[Sealed, ...] = field(kw_only=True)  # peer = recipient

    def _write(self, w: Writer) -> None:
        _write_sealed(w, self.sealed)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"sealed": _read_sealed(r)}


@dataclass(frozen=True)
class ShareDelivery(Message):
    """Stage 2 request, server: the sealed shares addressed to the recipient."""

    KIND: ClassVar[Kind] = Kind.SHARE_DELIVERY
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    recipient: int = field(kw_only=True)
    sealed: tuple[Sealed, ...] = field(kw_only=True)  # peer = original sender

    def _write(self, w: Writer) -> None:
        w.u32(self.recipient)
        _write_sealed(w, self.sealed)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"recipient": r.u32(), "sealed": _read_sealed(r)}


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Stage 2, client: its input plus masks, bit-packed at b bits per coordinate."""

    KIND: ClassVar[Kind] = Kind.MASKED_INPUT
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    bits: int = field(kw_only=True)
    words: RingVector = field(kw_only=True, repr=False)  # a vector of Z_(2^bits)
    # Neighbours whose bundles this client could not open, sorted and each once: it holds
    # none of their shares and left their pair masks out. Absent from the wire when empty.
    accusations: tuple[Accusation, ...] = field(kw_only=True, default=())

    def _payload(self) -> bytes | memoryview:
        """The values bit-packed at b bits each (the codec's packing); MalformedMessage if they
        are not a vector of Z_(2^b) (a message changed in memory: the wire cannot carry one)."""
        try:
            ring = Ring(self.bits)
            words = ring.check(self.words, "masked input")
        except RingError as exc:
            raise MalformedMessage(str(exc)) from None
        if ring.fills_word:  # packing words of exactly b bits is their little-endian bytes
            return np.ascontiguousarray(words).data.cast("B")
        return pack_bits(words, ring.bits)

    def _write(self, w: Writer) -> None:
        w.u8(self.bits).u64(np.size(self.words)).fixed(bytes(self._payload()))
        self._write_accusations(w)

    def _write_signed(self, w: Writer) -> None:
        # Ed25519 would hash megabytes twice (and PyNaCl copy them twice more); one BLAKE2b
        # pass over the packed values binds them as well.
        digest = hashlib.blake2b(self._payload(), digest_size=32, person=b"genofed-masked")
        w.u8(self.bits).u64(np.size(self.words)).fixed(digest.digest())
        self._write_accusations(w)

    def _write_accusations(self, w: Writer) -> None:
        if self.accusations:
            w.u32(len(self.accusations))
            for a in self.accusations:
                w.u32(a.accused).fixed(a.proof.encode())

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        bits, n = r.u8(), r.u64()
        if not 1 <= bits <= 64 or n > MAX_LENGTH:
            raise MalformedMessage(f"masked input of {n} values of {bits} bits is out of bounds")
        ring = Ring(bits)
        if ring.fills_word:
            words = np.frombuffer(r.view(n * ring.word.itemsize), dtype=ring.word)
        else:
            try:
                words = unpack_bits(r.fixed(packed_size(n, bits)), bits, n)
            except CodecError as exc:
                raise MalformedMessage(f"masked input: {exc}") from None
        accusations: tuple[Accusation, ...] = ()
        if not r.at_end():
            count = r.count(MAX_CLIENTS)
            if count == 0:  # one encoding per message: no accusations is no trailer
                raise MalformedMessage("masked input: an empty list of accusations")
            accusations = tuple(Accusation(r.u32(), KeyProof.decode(r.fixed(PROOF_BYTES)))
                                for _ in range(count))
        return {"bits": bits, "words": words, "accusations": accusations}


@dataclass(frozen=True)
class SurvivorList(Message):
    """Stage 3 request, server: the clients whose masked inputs it holds (U3), sorted."""

    KIND: ClassVar[Kind] = Kind.SURVIVOR_LIST
    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    survivors: tuple[int, ...] = field(kw_only=True)

    def _write(self, w: Writer) -> None:
        w.u32s(self.survivors)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"survivors": r.u32s(MAX_CLIENTS)}


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Stage 3, client: its signature of the survivor set (by digest); the signature is it."""

    KIND: ClassVar[Kind] = Kind.CONSISTENCY_SIGNATURE
    STAGE: ClassVar[Stage] = Stage.CONSISTENCY_CHECK
    survivors: Digest = field(kw_only=True)

    def _write(self, w: Writer) -> None:
        w.fixed(self.survivors.raw)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"survivors": Digest(r.fixed(32))}


@dataclass(frozen=True)
class Endorsement:
    """A neighbour's consistency signature, relayed by the server."""

    signer: int
    signature: Signature = field(repr=False)


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Stage 4 request, server: the endorsements of the survivor set, and which shares to send."""

    KIND: ClassVar[Kind] = Kind.UNMASK_REQUEST
    STAGE: ClassVar[Stage] = Stage.UNMASKING
    recipient: int = field(kw_only=True)
    survivors: Digest = field(kw_only=True)
    endorsements: tuple[Endorsement, ...] = field(kw_only=True)
    self_mask_of: tuple[int, ...] = field(kw_only=True)  # survivors: their b_u shares
    key_of: tuple[int, ...] = field(kw_only=True)  # dropped: their s_sk shares

    def _write(self, w: Writer) -> None:
        w.u32(self.recipient).fixed(self.survivors.raw).u32(len(self.endorsements))
        for e in self.endorsements:
            w.u32(e.signer).fixed(e.signature.raw)
        w.u32s(self.self_mask_of).u32s(self.key_of)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        recipient, digest = r.u32(), Digest(r.fixed(32))
        endorsements = tuple(Endorsement(r.u32(), Signature(r.fixed(_SIG)))
                             for _ in range(r.count(MAX_CLIENTS)))
        return {"recipient": recipient, "survivors": digest, "endorsements": endorsements,
                "self_mask_of": r.u32s(MAX_CLIENTS), "key_of": r.u32s(MAX_CLIENTS)}


@dataclass(frozen=True)
class RevealedShare:
    """The share a client holds of `owner`'s secret."""

    owner: int
    share: ShareValue


@dataclass(frozen=True)
class UnmaskShares(Message):
    """Stage 4, client: b_u shares of surviving peers, s_sk shares of dropped ones."""

    KIND: ClassVar[Kind] = Kind.UNMASK_SHARES
    STAGE: ClassVar[Stage] = Stage.UNMASKING
    self_shares: tuple[RevealedShare, ...] = field(kw_only=True)
    key_shares: tuple[RevealedShare, ...] = field(kw_only=True)

    def _write(self, w: Writer) -> None:
        for group in (self.self_shares, self.key_shares):
            w.u32(len(group))
            for s in group:
                w.u32(s.owner).fixed(s.share.raw)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        groups = [tuple(RevealedShare(r.u32(), ShareValue(r.fixed(SHARE_BYTES)))
                        for _ in range(r.count(MAX_CLIENTS))) for _ in range(2)]
        return {"self_shares": groups[0], "key_shares": groups[1]}


ClientMessage = AdvertiseKeys | EncryptedShares | MaskedInput | ConsistencySignature | UnmaskShares
ServerMessage = KeyList | ShareDelivery | SurvivorList | UnmaskRequest
_BY_KIND: dict[int, type[Message]] = {c.KIND: c for c in (
    AdvertiseKeys, KeyList, EncryptedShares, ShareDelivery, MaskedInput, SurvivorList,
    ConsistencySignature, UnmaskRequest, UnmaskShares)}


def decode(data: bytes) -> Message:
    """Parse wire bytes into the message they hold (signature not yet checked)."""
    if len(data) < len(MAGIC) + 2 + _SIG or data[:len(MAGIC)] != MAGIC:
        raise MalformedMessage("not a secure-aggregation message (bad magic or too short)")
    r = Reader(data[len(MAGIC):-_SIG], "secagg message")
    kind, stage = r.u8(), r.u8()
    cls = _BY_KIND.get(kind)
    if cls is None or stage != cls.STAGE:
        raise MalformedMessage(f"unknown message kind {kind} / stage {stage}")
    r.what = cls.__name__
    header = Header(r.text(64), r.u64(), Digest(r.fixed(32)), r.u32())
    body = cls._read(r)
    r.end()
    return cls(header=header, signature=Signature(bytes(data[-_SIG:])), **body)


def survivors_digest(ctx: RoundContext, survivors: tuple[int, ...]) -> Digest:
    """The digest clients sign in the consistency check."""
    data = Writer().fixed(ctx.encode()).u32s(survivors).getvalue()
    return Digest(nacl.hash.blake2b(data, digest_size=32, person=b"genofed-survivor",
                                    encoder=nacl.encoding.RawEncoder))


def endorsement_bytes(ctx: RoundContext, signer: int, digest: Digest) -> bytes:
    """What `signer` signed when it endorsed the survivor set `digest`."""
    msg = ConsistencySignature(header=Header.of(ctx, signer), signature=Signature(bytes(_SIG)),
                               survivors=digest)
    return msg.signed_bytes()
