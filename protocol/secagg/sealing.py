"""The share bundles a client seals to each neighbour, and the one rule for opening them.

A bundle from client a to client b holds a's Shamir share for b of its mask key s_a and of its
self-mask seed b_a, bound to the round, sender and recipient, in XSalsa20-Poly1305
(`nacl.secret.SecretBox`) under keyed BLAKE2b of the pair's Diffie-Hellman point (`PairKey`)
over the round and the pair. `open_bundle` is what the recipient does with it and what the
aggregator does again with a revealed pairwise key to judge an accusation (`blame.py`): both
sides apply the same rule, so a bundle the recipient could not open is one the aggregator
cannot open either, and the other way round.
"""

from __future__ import annotations

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret

from genofed.protocol.secagg import shamir
from genofed.protocol.secagg.encoding import Reader, Writer
from genofed.protocol.secagg.errors import ForgedMessage, MalformedMessage, ParameterError
from genofed.protocol.secagg.keys import PairKey, ShareValue
from genofed.protocol.secagg.prg import RoundContext

NONCE_BYTES = nacl.secret.SecretBox.NONCE_SIZE


class UnopenedBundle(ForgedMessage):
    """A bundle that does not decrypt, is bound to another round or pair, or holds no shares."""


def _box(key: PairKey, ctx: RoundContext, a: int, b: int) -> nacl.secret.SecretBox:
    lo, hi = min(a, b), max(a, b)
    data = Writer().fixed(ctx.encode()).u32(lo).u32(hi).getvalue()
    return nacl.secret.SecretBox(nacl.hash.blake2b(
        data, digest_size=32, key=key.raw, salt=b"share-box", person=b"genofed-seal",
        encoder=nacl.encoding.RawEncoder))


def plaintext(ctx: RoundContext, sender: int, recipient: int, s_share: ShareValue,
              b_share: ShareValue) -> bytes:
    """What a client seals to a neighbour: both shares, bound to round, sender, recipient."""
    return Writer().fixed(ctx.encode()).u32(sender).u32(recipient).fixed(s_share.raw) \
        .fixed(b_share.raw).getvalue()


def seal_bundle(key: PairKey, ctx: RoundContext, sender: int, recipient: int,
                s_share: ShareValue, b_share: ShareValue, nonce: bytes) -> bytes:
    """The ciphertext of one bundle."""
    text = plaintext(ctx, sender, recipient, s_share, b_share)
    return bytes(_box(key, ctx, sender, recipient).encrypt(text, nonce))


def open_bundle(key: PairKey, ctx: RoundContext, sender: int, recipient: int,
                ciphertext: bytes) -> tuple[ShareValue, ShareValue]:
    """The (s, b) shares in a bundle; UnopenedBundle saying why not."""
    try:
        text = _box(key, ctx, sender, recipient).decrypt(ciphertext)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise UnopenedBundle(f"shares from {sender} to {recipient} do not authenticate") \
            from None
    r = Reader(text, "sealed shares")
    try:
        bound = r.fixed(len(ctx.encode())) == ctx.encode() and r.u32() == sender \
            and r.u32() == recipient
        shares = ShareValue(r.fixed(shamir.SHARE_BYTES)), ShareValue(r.fixed(shamir.SHARE_BYTES))
        r.end()
    except MalformedMessage:
        raise UnopenedBundle(f"shares from {sender} to {recipient} are not two shares") \
            from None
    if not bound:
        raise UnopenedBundle(f"shares from {sender} to {recipient} are bound to another round "
                             "or pair")
    try:
        shamir.shares_from_bytes([s.raw for s in shares])
    except ParameterError:
        raise UnopenedBundle(f"shares from {sender} to {recipient} are not field elements") \
            from None
    return shares


def accusation_context(ctx: RoundContext, accuser: int, accused: int) -> bytes:
    """What an accusation's key proof is bound to: the round, who accuses, whom."""
    return Writer().fixed(b"genofed/secagg/v2/accusation\x00").fixed(ctx.encode()) \
        .u32(accuser).u32(accused).getvalue()
