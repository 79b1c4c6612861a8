"""The messages of a round, frozen dataclasses with one explicit byte encoding each.

Wire: b"GSA3" | core | Ed25519 signature (64 bytes). The signature covers
b"genofed/secagg/v3\\0" | core (in MaskedInput with the packed values replaced by their
BLAKE2b-256), and core always starts with the header: kind (u8), stage (u8),
federation (text), round (u64), configuration digest (32 bytes), sender (u32 roster index, or
SERVER). So every signature binds federation, round, configuration, stage and sender, and a
signature of one kind of message never verifies as another.

Version 2 (blame for provable disruption) made the `c` key of AdvertiseKeys a point of the
Ed25519 group (`SealPublicKey`), so that a recipient can prove a neighbour's shares bad
(`blame.py`), and let a MaskedInput end with accusations (none: the version 1 body, byte for
byte). Version 3 made the bundles small (`sealing.py`: 96 bytes, the round and direction in
the key, no nonce sent) and signs them once: EncryptedShares signs the Merkle root of its
(recipient, ciphertext) pairs (`merkle.py`) instead of each bundle, and ShareDelivery relays
each bundle with its sender's signature and the leaf's path, from which the recipient checks
the sender's signature before it accuses.

Client -> server: AdvertiseKeys, EncryptedShares, MaskedInput (with any accusations),
ConsistencySignature, UnmaskShares. Server -> client(s): KeyList, ShareDelivery, SurvivorList,
UnmaskRequest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, TypeVar

import nacl.encoding
import nacl.hash
import numpy as np

from genofed.protocol.codec_packing import pack_bits, packed_size, unpack_bits
from genofed.protocol.codec_stages import CodecError
from genofed.protocol.ring import Ring, RingError, RingVector
from genofed.protocol.secagg import merkle
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
from genofed.protocol.secagg.sealing import CIPHERTEXT_BYTES
from genofed.protocol.secagg.shamir import SHARE_BYTES

MAGIC = b"GSA3"
DOMAIN = b"genofed/secagg/v3\x00"
SERVER = 0xFFFFFFFF
MAX_CLIENTS = 1 << 16
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
    """An encrypted share bundle and the client at its other end (its recipient, in the
    sender's EncryptedShares)."""

    peer: int
    ciphertext: bytes = field(repr=False)

    def leaf(self) -> bytes:
        """Its leaf in its sender's Merkle tree."""
        return merkle.leaf(self.peer, self.ciphertext)


@dataclass(frozen=True)
class Relayed:
    """A bundle as the server relays it to its recipient: its sender, the ciphertext, its
    place in the sender's Merkle tree (`index` of `count`, and the sibling hashes up to the
    root) and the sender's signature of its EncryptedShares. With them the recipient can
    prove what the sender sent it, and no one can pass a bundle off as another client's."""

    sender: int
    ciphertext: bytes = field(repr=False)
    index: int
    count: int
    path: tuple[bytes, ...] = field(repr=False)
    signature: Signature = field(repr=False)

    def verify(self, key: IdentityKey, ctx: RoundContext, recipient: int) -> bool:
        """Whether `key` signed, in its EncryptedShares of this round, this bundle to
        `recipient`."""
        top = merkle.root_from_path(merkle.leaf(recipient, self.ciphertext), self.index,
                                    self.count, self.path)
        return top is not None and key.verify(
            shares_signed_bytes(Header.of(ctx, self.sender), self.count, top), self.signature)


def shares_signed_bytes(header: Header, count: int, root: bytes) -> bytes:
    """What the sender of an EncryptedShares of `count` bundles with Merkle root `root` signs."""
    probe = EncryptedShares(header=header, signature=Signature(bytes(_SIG)), sealed=())
    return probe._write_header(Writer().fixed(DOMAIN)).u32(count).fixed(root).getvalue()


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
        w.u32(s.peer).fixed(s.ciphertext)


def _read_sealed(r: Reader) -> tuple[Sealed, ...]:
    items = tuple(Sealed(r.u32(), r.fixed(CIPHERTEXT_BYTES)) for _ in range(r.count(MAX_CLIENTS)))
    if any(a.peer >= b.peer for a, b in itertools.pairwise(items)):
        raise MalformedMessage("sealed shares: recipients not in increasing order")
    return items


def _write_relayed(w: Writer, items: tuple[Relayed, ...]) -> None:
    w.u32(len(items))
    for s in items:
        w.u32(s.sender).fixed(s.ciphertext).u32(s.index).u32(s.count)
        for h in s.path:
            w.fixed(h)
        w.fixed(s.signature.raw)


def _read_relayed(r: Reader) -> tuple[Relayed, ...]:
    items = []
    for _ in range(r.count(MAX_CLIENTS)):
        sender, ciphertext, index, count = r.u32(), r.fixed(CIPHERTEXT_BYTES), r.u32(), r.u32()
        if not index < count <= MAX_CLIENTS:
            raise MalformedMessage(f"relayed shares: leaf {index} of a tree of {count}")
        path = tuple(r.fixed(merkle.HASH_BYTES) for _ in range(merkle.path_length(index, count)))
        items.append(Relayed(sender, ciphertext, index, count, path, Signature(r.fixed(_SIG))))
    return tuple(items)


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
    sealed: tuple[Sealed, ...] = field(kw_only=True)  # peer = recipient, in increasing order

    def _write(self, w: Writer) -> None:
        _write_sealed(w, self.sealed)

    def _write_signed(self, w: Writer) -> None:
        # One signature for all k bundles, over their Merkle root (`merkle.py`).
        w.u32(len(self.sealed)).fixed(self.root())

    def root(self) -> bytes:
        """The Merkle root of the bundles, in their order."""
        return merkle.root([s.leaf() for s in self.sealed])

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"sealed": _read_sealed(r)}


@dataclass(frozen=True)
class ShareDelivery(Message):
    """Stage 2 request, server: the sealed shares addressed to the recipient."""

    KIND: ClassVar[Kind] = Kind.SHARE_DELIVERY
    STAGE: ClassVar[Stage] = Stage.MASKED_INPUT
    recipient: int = field(kw_only=True)
    sealed: tuple[Relayed, ...] = field(kw_only=True)

    def _write(self, w: Writer) -> None:
        w.u32(self.recipient)
        _write_relayed(w, self.sealed)

    @classmethod
    def _read(cls, r: Reader) -> dict[str, object]:
        return {"recipient": r.u32(), "sealed": _read_relayed(r)}


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
