"""Blame for provable disruption, in memory (`protocol/secagg/blame.py`): a client with an
unusable key, one sealing garbage, a false accuser, and other signed violations are excluded
by name, at several positions in the roster, and the round completes with the rest, its sum
exact, or aborts for a stated reason. A false accusation never excludes the honest sender,
and a bundle the aggregator changed makes no client reveal anything."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support import disrupt
from support.secagg_rounds import Federation, federation, inputs_for, ring_sum

from genofed.protocol.secagg import (
    ForgedMessage,
    MalformedMessage,
    ProtocolViolation,
    ReplayedMessage,
    Stage,
    merkle,
    run_round,
)
from genofed.protocol.secagg import messages as m
from genofed.protocol.secagg.blame import BAD_SHARES, FALSE_ACCUSATION, INVALID_KEY, VIOLATION
from genofed.protocol.secagg.client import KEY, SecAggClient
from genofed.protocol.secagg.driver import RoundResult
from genofed.protocol.secagg.keys import (
    AgreementPublicKey,
    PairKey,
    SealKeyPair,
    SealPublicKey,
    ShareValue,
)
from genofed.protocol.secagg.proof import KeyProof, L, prove, verify
from genofed.protocol.secagg.sealing import accusation_context
from genofed.protocol.secagg.server import SecAggServer

POSITIONS = (0, 3, 6)  # first, middle and last in the roster of seven (k=6, t=4)


def drive(f: Federation, faulty: int, fault: str) -> tuple[RoundResult, dict[int, np.ndarray],
                                                            dict[int, SecAggClient]]:
    """One round in which client `faulty` sends its messages changed by `fault`."""
    clients, xs = f.clients(), inputs_for(f)
    ident = f.ids[faulty]

    def tamper(stage: Stage, src: int, dst: int, msg: m.Message) -> m.Message:
        if src != faulty:
            return msg
        wire = msg.encode()
        if fault in ("zero s_pk", "zero c_pk"):
            wire = disrupt.zero_key(wire, ident, which=fault.split()[1])
        elif fault == "garbage":
            wire = disrupt.garbage_shares(wire, ident)
        elif fault.startswith("accuse"):
            wire = disrupt.false_accusation(wire, ident, clients[faulty],
                                            proof_ok=fault == "accuse with the true key")
        return m.decode(wire)

    return run_round(f.config, f.server(), clients, xs, intercept=tamper), xs, clients


def assert_completes_without(res: RoundResult, xs: dict[int, np.ndarray], f: Federation,
                             culprit: int, kind: str) -> None:
    assert res.aborted is None, res.aborted
    assert list(res.culprits) == [culprit] and res.culprits[culprit].kind == kind
    rest = [i for i in range(f.config.n) if i != culprit]
    assert res.survivors == tuple(rest)
    np.testing.assert_array_equal(res.total, ring_sum([xs[i] for i in rest],
                                                      f.config.ring.bits))


@pytest.mark.parametrize("fault", ["zero s_pk", "zero c_pk"])
@pytest.mark.parametrize("culprit", POSITIONS)
def test_an_unusable_key_is_refused_on_arrival_and_the_round_goes_on(fault: str,
                                                                     culprit: int) -> None:
    f = federation(7, 6, 4, seed=100 + culprit)
    res, xs, _ = drive(f, culprit, fault)
    assert_completes_without(res, xs, f, culprit, INVALID_KEY)
    assert "advertised a" in res.culprits[culprit].reason


def test_an_unusable_key_in_a_smaller_round() -> None:
    """Six devices, k=4, t=3 (the demo's shape): each neighbour of the culprit keeps t."""
    f = federation(6, 4, 3, seed=99)
    res, xs, _ = drive(f, 2, "zero s_pk")
    assert_completes_without(res, xs, f, 2, INVALID_KEY)


@pytest.mark.parametrize("culprit", POSITIONS)
def test_garbage_shares_exclude_their_sender_on_its_neighbours_proof(culprit: int) -> None:
    f = federation(7, 6, 4, seed=110 + culprit)
    res, xs, clients = drive(f, culprit, "garbage")
    assert_completes_without(res, xs, f, culprit, BAD_SHARES)
    assert "do not open" in res.culprits[culprit].reason
    # Its accusers revealed none of its shares and were asked for none.
    for i in f.config.graph.neighbours(culprit):
        assert culprit not in clients[i].revealed


@pytest.mark.parametrize(("garbled", "completes"), [(1, True), (2, True), (3, False),
                                                    (5, False)])
def test_garbage_to_some_neighbours(garbled: int, completes: bool) -> None:
    """k=6, t=4: garbage to at most k - t = 2 neighbours leaves t holders of the culprit's mask
    key (it is rebuilt, its pair masks come off); to 3..5 it leaves fewer than t: the round
    aborts below threshold, naming the excluded client. (To all 6: the test above.)"""
    f = federation(7, 6, 4, seed=120 + garbled)
    culprit = 1
    targets = set(sorted(f.config.graph.neighbours(culprit))[:garbled])
    clients, xs = f.clients(), inputs_for(f)

    def tamper(stage: Stage, src: int, dst: int, msg: m.Message) -> m.Message:
        if src != culprit:
            return msg
        return m.decode(disrupt.garbage_shares(msg.encode(), f.ids[culprit], only=targets))

    res = run_round(f.config, f.server(), clients, xs, intercept=tamper)
    assert list(res.culprits) == [culprit]
    if completes:
        assert_completes_without(res, xs, f, culprit, BAD_SHARES)
        holders = f.config.graph.neighbours(culprit) - targets
        assert {i for i in holders if clients[i].revealed.get(culprit) == KEY} == holders
    else:
        assert res.total is None and res.aborted is not None
        assert f"client {culprit} (excluded: client {culprit} sealed shares" in res.aborted
        assert "live neighbours holding its shares, threshold 4" in res.aborted


@pytest.mark.parametrize("proof", ["accuse with the true key", "accuse with another key"])
@pytest.mark.parametrize("accuser", POSITIONS)
def test_a_false_accusation_excludes_the_accuser_never_the_accused(proof: str,
                                                                   accuser: int) -> None:
    f = federation(7, 6, 4, seed=130 + accuser)
    res, xs, clients = drive(f, accuser, proof)
    assert_completes_without(res, xs, f, accuser, FALSE_ACCUSATION)
    accused = min(clients[accuser]._held)
    assert f"accused client {accused}" in res.culprits[accuser].reason
    assert accused in res.survivors


def test_a_bundle_the_aggregator_changed_reveals_nothing() -> None:
    """A bundle that does not open and is not signed by its sender is the aggregator's doing:
    the client refuses the delivery whole and reveals no key. Signed by its sender, the same
    bundle is an accusation of the sender."""
    f = federation(5, 4, 3, seed=140)
    clients, server = f.clients(), f.server()
    for i, x in inputs_for(f).items():
        clients[i].set_input(x)
    for c in clients.values():
        server.receive(c.advertise())
    shares = {i: m.decode(clients[i].handle_bytes(msg.encode()))
              for i, msg in server.advance().items()}
    for msg in shares.values():
        server.receive(msg)
    d0 = server.advance()[0]
    assert isinstance(d0, m.ShareDelivery)
    first = d0.sealed[0]
    junk = bytes(len(first.ciphertext))
    changed = dataclasses.replace(first, ciphertext=junk)
    with pytest.raises(ForgedMessage, match="not signed"):
        clients[0].masked_input(m.ShareDelivery.create(f.server_id, d0.header, recipient=0,
                                                       sealed=(changed, *d0.sealed[1:])))
    # The sender's own EncryptedShares with junk for client 0, signed by it (one signature, over
    # the Merkle root of its bundles), relayed with the leaf's path.
    j, sent = first.sender, shares[first.sender]
    assert isinstance(sent, m.EncryptedShares)
    bundles = tuple(m.Sealed(s.peer, junk) if s.peer == 0 else s for s in sent.sealed)
    evil = m.EncryptedShares.create(f.ids[j], sent.header, sealed=bundles)
    pos = [s.peer for s in bundles].index(0)
    signed = m.Relayed(j, junk, pos, len(bundles), merkle.paths([s.leaf() for s in bundles])[pos],
                       evil.signature)
    answer = clients[0].masked_input(m.ShareDelivery.create(
        f.server_id, d0.header, recipient=0, sealed=(signed, *d0.sealed[1:])))
    assert [a.accused for a in answer.accusations] == [first.sender]


def test_a_client_treats_a_peer_with_an_unusable_key_as_dropped() -> None:
    """From an aggregator that did not refuse them: a small-order mask key, a sealing key
    outside the group, a key seen twice. The client seals to the others and goes on."""
    f = federation(7, 6, 4, seed=150)
    clients, server = f.clients(), f.server()
    for c in clients.values():
        server.receive(c.advertise())
    kl = server.advance()[0]
    assert isinstance(kl, m.KeyList)
    a, b = kl.adverts[0], kl.adverts[1]
    evils = [{"s_pk": AgreementPublicKey(bytes(32))}, {"c_pk": SealPublicKey(bytes(32))},
             {"s_pk": AgreementPublicKey(b"\x01" + bytes(31))},
             {"s_pk": AgreementPublicKey(bytes([0xff] * 32))},  # not canonical
             {"c_pk": b.c_pk}]  # b's key again: neither a nor b is usable
    for change in evils:
        keys = {"c_pk": a.c_pk, "s_pk": a.s_pk, **change}
        evil = m.AdvertiseKeys.create(f.ids[a.header.sender], a.header, **keys)
        client = SecAggClient(f.config, 0, f.ids[0], entropy=f.entropy)
        client.advertise()
        out = client.share_keys(m.KeyList.create(f.server_id, kl.header, recipient=0,
                                                 adverts=(evil, *kl.adverts[1:])))
        dropped = {a.header.sender} | ({b.header.sender} if "c_pk" in change and
                                       change["c_pk"] == b.c_pk else set())
        assert {s.peer for s in out.sealed} == {x.header.sender for x in kl.adverts} - dropped


def test_the_aggregator_refuses_an_advert_with_a_key_of_the_round() -> None:
    f = federation(5, 4, 3, seed=151)
    clients, server = f.clients(), f.server()
    first = clients[0].advertise()
    server.receive(first)
    copy = m.AdvertiseKeys.create(f.ids[1], m.Header.of(f.config.context, 1), c_pk=first.c_pk,
                                  s_pk=clients[1].advertise().s_pk)
    with pytest.raises(ProtocolViolation, match="a key client 0 advertised first"):
        server.receive(copy)
    assert server.culprits[1].kind == INVALID_KEY
    with pytest.raises(ProtocolViolation, match="excluded"):  # and nothing more of it
        server.receive(m.AdvertiseKeys.create(f.ids[1], copy.header,
                                              c_pk=SealKeyPair.generate(f.entropy).public,
                                              s_pk=copy.s_pk))


def test_shares_changed_after_signing_are_refused_as_forged() -> None:
    """One signature covers every bundle through their Merkle root: a bundle changed or
    dropped after signing makes the message not the sender's. Refused as forged,
    and nobody blamed (anyone on the path could have changed it)."""
    f = federation(5, 4, 3, seed=152)
    clients, server = f.clients(), f.server()
    for c in clients.values():
        server.receive(c.advertise())
    out = server.advance()
    reply = clients[2].handle(out[2])
    assert isinstance(reply, m.EncryptedShares)
    first = reply.sealed[0]
    changes = [
        (dataclasses.replace(first, ciphertext=bytes(len(first.ciphertext))), *reply.sealed[1:]),
        reply.sealed[1:],
    ]
    for sealed in changes:
        forged = dataclasses.replace(reply, sealed=tuple(sealed))
        with pytest.raises(ForgedMessage, match="not signed"):
            server.receive(m.decode(forged.encode()))
    with pytest.raises(MalformedMessage, match="increasing order"):
        m.decode(dataclasses.replace(reply, sealed=reply.sealed[::-1]).encode())
    assert not server.culprits
    server.receive(reply)  # the genuine one is taken


def _until_unmasking(f: Federation) -> tuple[dict[int, SecAggClient], SecAggServer,
                                             dict[int, m.ServerMessage]]:
    """Clients and server of an honest round whose survivor lists are out (undelivered)."""
    clients, server = f.clients(), f.server()
    for i, x in inputs_for(f).items():
        clients[i].set_input(x)
    for c in clients.values():
        server.receive(c.advertise())
    for _ in range(2):
        for i, msg in server.advance().items():
            server.receive(clients[i].handle(msg))
    return clients, server, server.advance()


def test_signed_violations_name_their_sender_and_the_round_goes_on() -> None:
    """An endorsement of another survivor set, an answer for a peer it was not asked about, a
    share outside the field: each refused, its sender excluded by name, never a crash; the
    round completes with the others' answers."""
    f = federation(9, 8, 5, seed=160)
    xs = inputs_for(f)
    clients, server, lists = _until_unmasking(f)
    ctx = f.config.context
    other = m.ConsistencySignature.create(f.ids[1], m.Header.of(ctx, 1),
                                          survivors=m.survivors_digest(ctx, (0, 1)))
    with pytest.raises(ProtocolViolation, match="another survivor set"):
        server.receive(other)
    for i, msg in lists.items():
        if i != 1:
            server.receive(clients[i].handle(msg))
    requests = server.advance()
    assert 1 not in requests
    answers = {i: clients[i].handle(msg) for i, msg in requests.items()}
    for i, forge in ((2, "unasked"), (3, "field")):
        ans = answers.pop(i)
        assert isinstance(ans, m.UnmaskShares)
        first = ans.self_shares[0]
        if forge == "unasked":
            extra = m.RevealedShare(1 if first.owner != 1 else 0, first.share)
            shares = (*ans.self_shares, extra)
        else:
            shares = (m.RevealedShare(first.owner, ShareValue(b"\xff" * 40)),
                      *ans.self_shares[1:])
        with pytest.raises(ProtocolViolation):
            server.receive(m.UnmaskShares.create(f.ids[i], ans.header, self_shares=shares,
                                                 key_shares=ans.key_shares))
    for ans in answers.values():
        server.receive(ans)
    server.advance()
    assert {i: b.kind for i, b in server.culprits.items()} == {1: VIOLATION, 2: VIOLATION,
                                                               3: VIOLATION}
    assert "not a field element" in server.culprits[3].reason
    np.testing.assert_array_equal(server.result, ring_sum(list(xs.values()), 32))


def test_a_copy_is_not_blamed() -> None:
    f = federation(5, 4, 3, seed=161)
    clients, server = f.clients(), f.server()
    ad = clients[0].advertise()
    server.receive(ad)
    with pytest.raises(ReplayedMessage):
        server.receive(ad)
    assert server.culprits == {}


def test_an_accusation_of_a_client_whose_input_was_already_summed_still_excludes_it() -> None:
    """Inputs are summed only when MaskedInputCollection closes: the culprit (client 0) sends
    its masked input before any neighbour's accusation arrives."""
    f = federation(5, 4, 3, seed=162)
    res, xs, _ = drive(f, 0, "garbage")
    assert_completes_without(res, xs, f, 0, BAD_SHARES)


def test_below_threshold_without_the_culprit_aborts_naming_it() -> None:
    """Three clients, k=2, t=2: without the culprit no client keeps t neighbours with keys."""
    f = federation(3, 2, 2, seed=163)
    res, _, _ = drive(f, 1, "zero s_pk")
    assert res.total is None and res.aborted is not None and "threshold 2" in res.aborted
    assert res.culprits[1].kind == INVALID_KEY


# -- the proof -----------------------------------------------------------------------------

def test_key_proof_binds_key_keys_and_context() -> None:
    a, b, c = (SealKeyPair.generate() for _ in range(3))
    ctx = b"round 7, 1 accuses 2"
    p = prove(a.secret, b.public, ctx)
    assert p.key == b.secret.agree(a.public)
    assert verify(a.public, b.public, p, ctx)
    assert KeyProof.decode(p.encode()) == p and len(p.encode()) == 128
    assert not verify(a.public, b.public, p, ctx + b"!")  # another round or pair
    assert not verify(c.public, b.public, p, ctx)  # another accuser
    assert not verify(a.public, c.public, p, ctx)  # another accused
    assert not verify(a.public, b.public, dataclasses.replace(
        p, key=c.secret.agree(b.public)), ctx)  # another key, same proof
    assert not verify(a.public, b.public, prove(c.secret, b.public, ctx), ctx)
    for field, value in (("r1", p.r2), ("r2", p.r1), ("z", bytes(32)),
                         ("z", (int.from_bytes(p.z, "little") + L).to_bytes(32, "little")),
                         ("key", PairKey(bytes(32)))):
        assert not verify(a.public, b.public, dataclasses.replace(p, **{field: value}), ctx)
    assert not verify(SealPublicKey(bytes(32)), b.public, p, ctx)


def test_accusations_travel_in_the_masked_input_and_none_is_the_old_body() -> None:
    f = federation(3, 2, 2, bits=12, length=5, seed=170)
    a, b = SealKeyPair.generate(f.entropy), SealKeyPair.generate(f.entropy)
    proof = prove(a.secret, b.public, accusation_context(f.config.context, 0, 1), f.entropy)
    words = np.arange(5, dtype=np.uint16)
    header = m.Header.of(f.config.context, 0)
    plain = m.MaskedInput.create(f.ids[0], header, bits=12, words=words)
    accusing = m.MaskedInput.create(f.ids[0], header, bits=12, words=words,
                                    accusations=(m.Accusation(1, proof),))
    assert accusing.core() == plain.core() + (1).to_bytes(4, "big") + (1).to_bytes(4, "big") \
        + proof.encode()
    back = m.decode(accusing.encode())
    assert isinstance(back, m.MaskedInput) and back.accusations == accusing.accusations
    assert back.verify(f.ids[0].public)
    stripped = dataclasses.replace(accusing, accusations=())  # the signature covers them
    assert not stripped.verify(f.ids[0].public)
    with pytest.raises(MalformedMessage, match="empty list"):
        m.decode(m.MAGIC + plain.core() + bytes(4) + plain.signature.raw)


def test_a_client_below_threshold_after_its_accusations_aborts() -> None:
    """k=2, t=2: a client whose one other neighbour sealed garbage holds t-1 bundles."""
    f = federation(3, 2, 2, seed=171)
    res, _, _ = drive(f, 0, "garbage")
    assert res.total is None and res.aborted is not None

