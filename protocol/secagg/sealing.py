"""The share bundles a client seals to each neighbour, and the one rule for opening them.

A bundle from client a to client b holds a's Shamir share for b of its mask key s_a and of its
self-mask seed b_a (2 x 40 bytes) in XSalsa20-Poly1305 (`nacl.secret.SecretBox`), under keyed
BLAKE2b of the pair's Diffie-Hellman point (`PairKey`) over the round, the sender and the
recipient: the key binds the bundle to its round and direction, so a bundle replayed into
another round, or passed off as sent the other way or between another pair, does not
authenticate. Nothing else goes in the plaintext, and the nonce is not sent: 96 bytes a
bundle.

Why a fixed nonce is sound here. XSalsa20-Poly1305 fails only when one key encrypts two
messages under one nonce. Each box key encrypts exactly one bundle: it is derived from the
round's ephemeral sealing keys (fresh per client and round, never stored), the round and the
direction, and a client seals to each neighbour once per round (its stage machine takes one
KeyList). libsodium's sealed boxes rest on the same argument (a nonce derived from keys used
once). `open_bundle` is what the recipient does with it and what the
aggregator does again with a revealed pairwise key to judge an accusation (`blame.py`): both
sides apply the same rule, so a bundle the recipient could not open is one the aggregator
cannot open either, and the other way round.
"""

from __future__ import annotations

import hashlib

import nacl.exceptions
import nacl.secret

from genofed.protocol.secagg import shamir
from genofed.protocol.secagg.encoding import Writer
from genofed.protocol.secagg.errors import ForgedMessage, ParameterError
from genofed.protocol.secagg.keys import PairKey, ShareValue
from genofed.protocol.secagg.prg import RoundContext

NONCE = bytes(nacl.secret.SecretBox.NONCE_SIZE)  # see above: each box key seals one bundle
CIPHERTEXT_BYTES = 2 * shamir.SHARE_BYTES + nacl.secret.SecretBox.MACBYTES


class UnopenedBundle(ForgedMessage):
    """A bundle that does not decrypt, is bound to another round or pair, or holds no shares."""


def _box(key: PairKey, ctx: RoundContext, sender: int, recipient: int) -> nacl.secret.SecretBox:
    """The box of the bundle from `sender` to `recipient` in this round (one a direction)."""
    data = Writer().fixed(ctx.encode()).u32(sender).u32(recipient).getvalue()
    return nacl.secret.SecretBox(hashlib.blake2b(
        data, digest_size=32, key=key.raw, salt=b"share-box3", person=b"genofed-seal").digest())


def seal_bundle(key: PairKey, ctx: RoundContext, sender: int, recipient: int,
                s_share: ShareValue, b_share: ShareValue) -> bytes:
    """The ciphertext of one bundle (CIPHERTEXT_BYTES: the two shares and the tag)."""
    sealed = _box(key, ctx, sender, recipient).encrypt(s_share.raw + b_share.raw, NONCE)
    return bytes(sealed.ciphertext)


def open_bundle(key: PairKey, ctx: RoundContext, sender: int, recipient: int,
                ciphertext: bytes) -> tuple[ShareValue, ShareValue]:
    """The (s, b) shares in a bundle; UnopenedBundle saying why not."""
    try:
        text = _box(key, ctx, sender, recipient).decrypt(ciphertext, NONCE)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise UnopenedBundle(f"shares from {sender} to {recipient} do not authenticate (for "
                             "this round and direction)") from None
    if len(text) != 2 * shamir.SHARE_BYTES:
        raise UnopenedBundle(f"shares from {sender} to {recipient} are not two shares")
    shares = ShareValue(text[:shamir.SHARE_BYTES]), ShareValue(text[shamir.SHARE_BYTES:])
    try:
        shamir.shares_from_bytes([s.raw for s in shares])
    except ParameterError:
        raise UnopenedBundle(f"shares from {sender} to {recipient} are not field elements") \
            from None
    return shares


def accusation_context(ctx: RoundContext, accuser: int, accused: int) -> bytes:
    """What an accusation's key proof is bound to: the round, who accuses, whom."""
    return Writer().fixed(b"genofed/secagg/v3/accusation\x00").fixed(ctx.encode()) \
        .u32(accuser).u32(accused).getvalue()
