"""Test-only disruptions of one device's SecAgg+ messages, never in the product.

Each takes the wire bytes an honest client made and returns what a device with a valid
identity (and certificate) sends instead, signed again with its own identity, so only the
content is wrong: the aggregator can blame nobody else. Messages of other stages pass as they
are. Used by the in-memory tests (the driver's `intercept`, the simulator's `tamper`) and by
`faulty_agent.py` on the real broker.

- `zero_key`: the advertisement's X25519 mask key (or the sealing key) all zero.
- `garbage_shares`: every sealed bundle replaced by random bytes of its length, all signed.
- `false_accusation`: the masked input accuses a neighbour whose shares opened, with the right
  pairwise key and its proof (`proof_ok`) or with a proof of another key.
- `wrong_reveal`: the unmasking answer with shares off by one (the lowest bit of the first
  limb flipped, so still field elements), the first `count` of them or all.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from genofed.protocol.secagg import SecAggClient, SigningIdentity
from genofed.protocol.secagg.keys import AgreementPublicKey, SealKeyPair, SealPublicKey, ShareValue
from genofed.protocol.secagg.messages import (
    Accusation,
    AdvertiseKeys,
    EncryptedShares,
    MaskedInput,
    RevealedShare,
    Sealed,
    UnmaskShares,
    decode,
)
from genofed.protocol.secagg.proof import prove
from genofed.protocol.secagg.sealing import accusation_context

Random = Callable[[int], bytes]


def zero_key(payload: bytes, identity: SigningIdentity, *, which: str = "s_pk") -> bytes:
    """An advertisement with one of its keys all zero (a small-order point in both groups)."""
    msg = decode(payload)
    if not isinstance(msg, AdvertiseKeys):
        return payload
    c_pk = SealPublicKey(bytes(32)) if which == "c_pk" else msg.c_pk
    s_pk = AgreementPublicKey(bytes(32)) if which == "s_pk" else msg.s_pk
    return AdvertiseKeys.create(identity, msg.header, c_pk=c_pk, s_pk=s_pk).encode()


def garbage_shares(payload: bytes, identity: SigningIdentity, *,
                   only: set[int] | None = None, rand: Random = os.urandom) -> bytes:
    """Shares with random bundles (to `only` those peers, or to all), signed."""
    msg = decode(payload)
    if not isinstance(msg, EncryptedShares):
        return payload
    sealed = tuple(Sealed(s.peer, rand(len(s.ciphertext))) if only is None or s.peer in only
                   else s for s in msg.sealed)
    return EncryptedShares.create(identity, msg.header, sealed=sealed).encode()


def false_accusation(payload: bytes, identity: SigningIdentity, client: SecAggClient, *,
                     proof_ok: bool = True) -> bytes:
    """A masked input that accuses its lowest neighbour whose shares it holds (read from the
    client's private state: only a test reaches into it)."""
    msg = decode(payload)
    if not isinstance(msg, MaskedInput) or not client._held:
        return payload
    ctx, me = msg.header.context, msg.header.sender
    j = min(client._held)
    peer = client._peers[j].c_pk
    context = accusation_context(ctx, me, j)
    # The true pairwise key (the aggregator opens j's bundle with it), or a key of another
    # secret with that secret's proof, which does not verify as this client's.
    secret = client._c.secret if proof_ok else SealKeyPair.generate().secret
    proof = prove(secret, peer, context)
    return MaskedInput.create(identity, msg.header, bits=msg.bits, words=msg.words,
                              accusations=(Accusation(j, proof),)).encode()


def wrong_reveal(payload: bytes, identity: SigningIdentity, *, count: int | None = None
                 ) -> bytes:
    """An unmasking answer whose first `count` shares (all if None) are off by one, signed.
    (A change in a share's last byte could push its top limb past 2^61 - 1, which is refused
    sooner, as a share outside the field.)"""
    msg = decode(payload)
    if not isinstance(msg, UnmaskShares):
        return payload
    shares = (*msg.self_shares, *msg.key_shares)
    wrong = len(shares) if count is None else count
    shares = tuple(RevealedShare(s.owner, ShareValue(bytes([s.share.raw[0] ^ 1])
                                                     + s.share.raw[1:]))
                   for s in shares[:wrong]) + shares[wrong:]
    n = len(msg.self_shares)
    return UnmaskShares.create(identity, msg.header, self_shares=shares[:n],
                               key_shares=shares[n:]).encode()
