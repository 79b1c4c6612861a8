"""Secure aggregation: exact sums under any survivable dropout, aborts below threshold, shares
never released twice for one peer, forged / replayed / wrong-round messages refused, masked
vectors uniform, Shamir t-of-k, and the (k, t) rule against Google's published table."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.secagg_rounds import Entropy, Federation, federation, inputs_for, ring_sum

from genofed.protocol.ring import Ring, RingError
from genofed.protocol.secagg import (
    ForgedMessage,
    GraphSeed,
    InconsistentRequest,
    MalformedMessage,
    ParameterError,
    ReplayedMessage,
    RoundAborted,
    RoundConfig,
    SecAggParams,
    SecAggServer,
    SigningIdentity,
    Stage,
    WrongRound,
    choose_parameters,
    run_round,
    shamir,
)
from genofed.protocol.secagg import messages as m
from genofed.protocol.secagg.client import KEY, SELF_MASK, SecAggClient
from genofed.protocol.secagg.graph import NeighbourGraph
from genofed.protocol.secagg.keys import (
    Digest,
    IdentitySeed,
    MaskSeed,
    ShareValue,
    Signature,
)
from genofed.protocol.secagg.prg import pair_seed, self_seed

BOUNDED = settings(max_examples=80, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- whole rounds -------------------------------------------------------------------------------

_STAGES = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK,
           Stage.UNMASKING)


@st.composite
def round_cases(draw: st.DrawFn) -> tuple[int, int, int, int, int, dict[Stage, set[int]], int]:
    """Any n, k, t, ring and length; dropouts mostly around what a neighbourhood can lose."""
    n = draw(st.integers(3, 10))
    k = draw(st.sampled_from(sorted({*range(2, n - 1, 2), n - 1})))
    t = draw(st.integers(k // 2 + 1, k))
    bits = draw(st.integers(1, 62))
    length = draw(st.integers(1, 24))
    count = draw(st.one_of(st.integers(0, k - t + 1), st.integers(0, n)))
    who = draw(st.permutations(range(n)))[:count]
    drops: dict[Stage, set[int]] = {s: set() for s in _STAGES}
    for i in who:
        drops[draw(st.sampled_from(_STAGES))].add(i)
    return n, k, t, bits, length, drops, draw(st.integers(0, 2**16))


@BOUNDED
@given(round_cases())
def test_sum_of_survivors_is_exact_under_any_dropout(
        case: tuple[int, int, int, int, int, dict[Stage, set[int]], int]) -> None:
    n, k, t, bits, length, drops, seed = case
    f = federation(n, k, t, bits=bits, length=length, seed=seed)
    xs = inputs_for(f, seed)
    graph = f.config.graph
    alive, after = set(range(n)), {}
    for s in sorted(drops):
        alive -= drops[s]
        after[s] = set(alive)
    u1, u2, u3, u5 = (after[s] for s in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS,
                                         Stage.MASKED_INPUT, Stage.UNMASKING))
    survivable = bool(u2) and all(len(graph.neighbours(u) & u1) >= t for u in u1) and \
        all(len(graph.neighbours(v) & u5) >= t for v in u2)
    res = run_round(f.config, f.server(), f.clients(), xs, drop=drops)
    event("survivable" if survivable else "aborts")
    if not survivable:
        assert res.aborted is not None and res.total is None
        return
    assert res.aborted is None, res.aborted
    assert set(res.survivors) == u3
    assert res.total is not None and res.total.dtype == f.config.ring.word
    np.testing.assert_array_equal(res.total, ring_sum([xs[i] for i in sorted(u3)], bits))


def test_classic_secagg_full_round_and_drops() -> None:
    f = federation(6, 5, 3, bits=24, length=300, seed=3)
    xs = inputs_for(f)
    res = run_round(f.config, f.server(), f.clients(), xs,
                    drop={Stage.MASKED_INPUT: {2}, Stage.UNMASKING: {4}})
    assert res.survivors == (0, 1, 3, 4, 5)
    np.testing.assert_array_equal(res.total, ring_sum([xs[i] for i in res.survivors], 24))


def test_below_threshold_aborts_before_any_share_is_asked() -> None:
    f = federation(6, 4, 3, seed=4)
    seen: list[tuple[Stage, int, int]] = []

    def spy(stage: Stage, src: int, dst: int, msg: m.Message) -> m.Message:
        seen.append((stage, src, dst))
        return msg

    server = f.server()
    res = run_round(f.config, server, f.clients(), inputs_for(f),
                    drop={Stage.MASKED_INPUT: {0, 1, 2}}, intercept=spy)
    assert res.aborted is not None and "threshold" in res.aborted and res.total is None
    assert not any(stage >= Stage.CONSISTENCY_CHECK for stage, _, _ in seen)
    with pytest.raises(RoundAborted):
        server.advance()
    with pytest.raises(Exception, match="no result"):
        _ = server.result


def test_client_refuses_below_threshold_survivor_list() -> None:
    f = federation(5, 4, 3, seed=5)
    clients, server = f.clients(), f.server()
    _run_until(f, clients, server, Stage.CONSISTENCY_CHECK)
    few = m.SurvivorList.create(f.server_id, _server_header(f), survivors=(0, 1))
    with pytest.raises(RoundAborted):
        clients[0].consistency(few)
    with pytest.raises(RoundAborted):  # and it stays out of the round
        clients[0].consistency(few)


# -- a malicious server never gets both shares of one client ---------------------------------

def _server_header(f: Federation) -> m.Header:
    return m.Header.of(f.config.context, m.SERVER)


def _run_until(f: Federation, clients: dict[int, SecAggClient], server: SecAggServer,
               stage: Stage, drop_masked: frozenset[int] = frozenset()) -> None:
    """Run honestly through the stages before `stage`, leaving its requests undelivered."""
    for i, x in inputs_for(f).items():
        clients[i].set_input(x)
    for c in clients.values():
        server.receive(c.advertise())
    for s in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASKING):
        if s == stage:
            return
        out = server.advance()
        for i, msg in out.items():
            if s == Stage.MASKED_INPUT and i in drop_masked:
                continue
            server.receive(clients[i].handle(msg))


def test_client_refuses_to_reveal_both_shares_of_a_peer() -> None:
    f = federation(6, 4, 3, seed=6)
    clients, server = f.clients(), f.server()
    _run_until(f, clients, server, Stage.UNMASKING, drop_masked=frozenset({5}))
    out = server.advance()
    req = out[0]
    assert isinstance(req, m.UnmaskRequest)
    near = f.config.graph.neighbours(0)
    alive = sorted(near - {5})
    greedy = [
        dataclasses.replace(req, self_mask_of=tuple(alive), key_of=(alive[0],)),  # both kinds
        dataclasses.replace(req, self_mask_of=(), key_of=tuple(alive)),  # keys of survivors
        dataclasses.replace(req, self_mask_of=(5,), key_of=()),  # self mask of a dropped one
        dataclasses.replace(req, self_mask_of=(alive[0], alive[0]), key_of=()),
    ]
    for bad in greedy:
        forged = m.UnmaskRequest.create(f.server_id, req.header, recipient=0,
                                        survivors=bad.survivors, endorsements=bad.endorsements,
                                        self_mask_of=bad.self_mask_of, key_of=bad.key_of)
        with pytest.raises(InconsistentRequest):
            clients[0].unmask(forged)
        assert clients[0].revealed == {}
    answer = clients[0].unmask(req)
    assert {s.owner for s in answer.key_shares}.isdisjoint(s.owner for s in answer.self_shares)
    with pytest.raises(ReplayedMessage):  # one answer per round, whatever is asked next
        clients[0].unmask(dataclasses.replace(req))
    assert all(v == SELF_MASK for j, v in clients[0].revealed.items() if j != 5)
    assert clients[0].revealed.get(5, KEY) == KEY


@pytest.mark.parametrize("sees_alive", [{0, 2, 4, 6}, {0, 1, 2, 3, 4}, {0, 1},
                                        {0, 1, 2, 3, 4, 5}, {0, 3, 4, 5, 6}])
def test_split_view_server_cannot_collect_both_shares(sees_alive: set[int]) -> None:
    """The server tells some clients that client 0 survived and the rest that it dropped, relays
    whatever endorsements help, and asks each group for the matching share of client 0. Honest
    clients answer only with t endorsements of the set they signed themselves, so it never
    holds t shares of both b_0 and s_0."""
    n, k, t = 7, 6, 4
    f = federation(n, k, t, seed=8)
    clients, server = f.clients(), f.server()
    _run_until(f, clients, server, Stage.CONSISTENCY_CHECK)
    ctx, header = f.config.context, _server_header(f)
    views = {True: tuple(range(n)), False: tuple(range(1, n))}
    group = {i: i in sees_alive for i in range(n)}
    endorse: dict[int, Signature] = {}
    for i, c in clients.items():
        sl = m.SurvivorList.create(f.server_id, header, survivors=views[group[i]])
        endorse[i] = c.consistency(sl).signature
    b_shares: set[int] = set()
    s_shares: set[int] = set()
    for i in range(1, n):
        digest = m.survivors_digest(ctx, views[group[i]])
        same = [j for j in range(n) if j != i and group[j] == group[i]]
        for signers in (same, [j for j in range(n) if j != i]):
            req = m.UnmaskRequest.create(
                f.server_id, header, recipient=i, survivors=digest,
                endorsements=tuple(m.Endorsement(j, endorse[j]) for j in signers),
                self_mask_of=(0,) if group[i] else (), key_of=() if group[i] else (0,))
            try:
                ans = clients[i].unmask(req)
            except (RoundAborted, ForgedMessage, InconsistentRequest):
                continue
            b_shares |= {i for s in ans.self_shares if s.owner == 0}
            s_shares |= {i for s in ans.key_shares if s.owner == 0}
            break
    assert not (len(b_shares) >= t and len(s_shares) >= t)
    big = max(len(sees_alive), n - len(sees_alive))
    assert max(len(b_shares), len(s_shares)) == (big - (1 if big == len(sees_alive) else 0)
                                                 if big - 1 >= t else 0)


# -- forged, replayed, wrong-round messages ---------------------------------------------------

def test_server_rejects_forged_replayed_and_wrong_round_messages() -> None:
    f = federation(5, 4, 3, seed=9)
    clients, server = f.clients(), f.server()
    ad = clients[1].advertise()
    tampered = dataclasses.replace(ad, signature=Signature(bytes(64)))
    with pytest.raises(ForgedMessage, match="not signed"):
        server.receive(tampered)
    impostor = m.AdvertiseKeys.create(SigningIdentity.generate(f.entropy), ad.header,
                                      c_pk=ad.c_pk, s_pk=ad.s_pk)
    with pytest.raises(ForgedMessage):
        server.receive(impostor)
    stranger = m.AdvertiseKeys.create(f.ids[1], dataclasses.replace(ad.header, sender=99),
                                      c_pk=ad.c_pk, s_pk=ad.s_pk)
    with pytest.raises(ForgedMessage, match="not an enrolled client"):
        server.receive(stranger)
    old = f.with_round(6)
    stale = SecAggClient(old.config, 1, f.ids[1], entropy=f.entropy).advertise()
    with pytest.raises(WrongRound):
        server.receive(stale)
    server.receive(ad)
    with pytest.raises(ReplayedMessage, match="second"):
        server.receive(ad)
    with pytest.raises(ReplayedMessage):
        server.receive_bytes(ad.encode())
    for i in (0, 2, 3, 4):
        server.receive(clients[i].advertise())
    out = server.advance()
    with pytest.raises(ReplayedMessage, match="during SHARE_KEYS"):  # a stage-0 message late
        server.receive(ad)
    kl = out[0]
    assert isinstance(kl, m.KeyList)
    reply = clients[0].share_keys(kl)
    server.receive(reply)
    with pytest.raises(ReplayedMessage, match="second"):
        server.receive(reply)
    resigned = m.EncryptedShares.create(f.ids[0], reply.header, sealed=reply.sealed[:1])
    with pytest.raises(ReplayedMessage):  # a fresh signature does not make a second one welcome
        server.receive(resigned)


def test_client_rejects_forged_replayed_misrouted_and_wrong_round_requests() -> None:
    f = federation(5, 4, 3, seed=10)
    clients, server = f.clients(), f.server()
    for c in clients.values():
        server.receive(c.advertise())
    out = server.advance()
    kl = out[0]
    assert isinstance(kl, m.KeyList)
    with pytest.raises(ForgedMessage, match="aggregator"):  # signed by someone else
        clients[0].share_keys(m.KeyList.create(f.ids[3], kl.header, recipient=0,
                                               adverts=kl.adverts))
    bad_advert = dataclasses.replace(kl.adverts[0], signature=Signature(bytes(64)))
    with pytest.raises(ForgedMessage, match="enrolled identity"):
        clients[0].share_keys(m.KeyList.create(f.server_id, kl.header, recipient=0,
                                               adverts=(bad_advert, *kl.adverts[1:])))
    with pytest.raises(ReplayedMessage, match="addressed to client 0"):
        clients[1].share_keys(kl)
    other = f.with_round(8)
    with pytest.raises(WrongRound):
        clients[0].share_keys(m.KeyList.create(f.server_id, m.Header.of(other.config.context,
                                                                        m.SERVER),
                                               recipient=0, adverts=kl.adverts))
    with pytest.raises(ReplayedMessage):  # a stage-2 request before stage 1
        clients[0].masked_input(m.ShareDelivery.create(f.server_id, kl.header, recipient=0,
                                                       sealed=()))
    for i, msg in out.items():
        server.receive(clients[i].handle(msg))
    with pytest.raises(ReplayedMessage):  # the same key list again
        clients[0].share_keys(kl)
    deliveries = server.advance()
    d0 = deliveries[0]
    assert isinstance(d0, m.ShareDelivery)
    first = d0.sealed[0]
    # A bundle the aggregator changed does not open and is not signed by its sender: the
    # delivery is refused whole, and nothing is revealed.
    flipped = dataclasses.replace(
        first, ciphertext=first.ciphertext[:-1] + bytes([first.ciphertext[-1] ^ 1]))
    clients[0].set_input(np.zeros(f.config.length, dtype=np.uint64))
    with pytest.raises(ForgedMessage, match="not signed"):
        clients[0].masked_input(m.ShareDelivery.create(f.server_id, d0.header, recipient=0,
                                                       sealed=(flipped, *d0.sealed[1:])))
    # j's bundle claimed to be from l
    rerouted = dataclasses.replace(first, sender=d0.sealed[1].sender)
    with pytest.raises(ForgedMessage, match="not signed"):
        clients[0].masked_input(m.ShareDelivery.create(f.server_id, d0.header, recipient=0,
                                                       sealed=(d0.sealed[0], rerouted)))
    clients[0].masked_input(d0)  # the genuine one still works: rejections changed nothing


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 31, 32, 33, 62, 64])
def test_masked_input_is_bit_packed(bits: int) -> None:
    """b bits per coordinate on the wire, exactly the codec's packing, and back."""
    from genofed.protocol.codec_packing import pack_bits

    f = federation(3, 2, 2, bits=bits, seed=bits)
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << min(bits, 63), 1001, dtype=np.uint64)
    if bits == 64:
        values[0] = np.uint64(2**64 - 1)
    msg = m.MaskedInput.create(f.ids[0], m.Header.of(f.config.context, 0), bits=bits,
                               words=values.astype(Ring(bits).word))
    core = msg.core()
    assert core.endswith(pack_bits(values, bits)) and len(core) < 100 + (1001 * bits + 7) // 8
    back = m.decode(msg.encode())
    assert isinstance(back, m.MaskedInput) and back.verify(f.ids[0].public)
    assert back.words.dtype == Ring(bits).word
    np.testing.assert_array_equal(np.asarray(back.words, dtype=np.uint64), values)


def test_a_masked_input_outside_the_ring_is_malformed() -> None:
    """Values of 2^b or more cannot come off the wire; changed in memory, they are refused as a
    malformed message (dropped and counted), never as the server's own bad input."""
    f = federation(5, 4, 3, bits=12, length=16, seed=16)
    clients, server = f.clients(), f.server()
    _run_until(f, clients, server, Stage.MASKED_INPUT)
    d0 = server.advance()[0]
    assert isinstance(d0, m.ShareDelivery)
    sent = clients[0].masked_input(d0)
    for bad in (np.full(16, 1 << 12, dtype=np.uint16), np.arange(16, dtype=np.int64),
                np.zeros((4, 4), dtype=np.uint16)):
        forged = dataclasses.replace(sent, words=bad)
        with pytest.raises(MalformedMessage) as info:
            server.receive(forged)
        assert not isinstance(info.value, RingError)
    server.receive(sent)  # the genuine one is still taken: the refusals changed nothing


def test_input_must_be_a_ring_vector_and_is_the_clients_own() -> None:
    f = federation(5, 4, 3, bits=12, length=16, seed=17)
    client = f.clients()[0]
    with pytest.raises(ParameterError, match="shape"):
        client.set_input(np.zeros(15, dtype=np.uint16))
    with pytest.raises(RingError, match="not below 2\\^12"):
        client.set_input(np.full(16, 1 << 12, dtype=np.uint64))
    with pytest.raises(RingError, match="unsigned"):
        client.set_input(np.zeros(16, dtype=np.int64))
    xs = inputs_for(f, 3)
    words = {i: f.config.ring.check(x) for i, x in xs.items()}
    kept = {i: w.copy() for i, w in words.items()}
    res = run_round(f.config, f.server(), f.clients(), words)
    for i in words:  # masking happened on the client's copy, not on the caller's vector
        np.testing.assert_array_equal(words[i], kept[i])
    assert res.total is not None and res.total.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(res.total, ring_sum(list(xs.values()), 12))


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_decoding_garbage_only_raises_malformed(data: bytes) -> None:
    for payload in (data, m.MAGIC + data, m.MAGIC + bytes([5, 2]) + data):
        try:
            msg = m.decode(payload)
        except MalformedMessage:
            continue
        assert msg.encode() == payload  # what parses is canonical


def test_messages_round_trip() -> None:
    f = federation(5, 4, 3, length=9, seed=11)
    clients, server = f.clients(), f.server()
    for i, x in inputs_for(f).items():
        clients[i].set_input(x)
    sent: list[m.Message] = []
    for c in clients.values():
        ad = c.advertise()
        server.receive(ad)
        sent.append(ad)
    for _ in range(4):
        out = server.advance()
        sent += out.values()
        for i, request in out.items():
            reply = clients[i].handle(request)
            server.receive(reply)
            sent.append(reply)
    for msg in sent:
        back = m.decode(msg.encode())
        assert type(back) is type(msg) and back.encode() == msg.encode()
        if not isinstance(msg, m.MaskedInput):
            assert back == msg
        with pytest.raises(MalformedMessage):
            m.decode(msg.encode()[:-65])


# -- the wire format, pinned --------------------------------------------------------------------
# The sha256 of every pinned encoding was computed for version 3 of the messages (b"GSA3":
# 96-byte bundles signed once through a Merkle root; version 2 brought blame for provable
# disruption), whose MaskedInput core without accusations is version 1's byte for byte (checked
# below against the documented layout): a change here breaks every deployed device. The MaskedInput
# core is rebuilt from the documented layout (messages.py, codec_packing.py) with Python
# integers.

_PIN_WIDTHS = (1, 7, 8, 12, 16, 31, 32, 33, 63, 64)
_PIN_IDENTITY = SigningIdentity(IdentitySeed(bytes(range(32))))
_PIN_HEADER = m.Header("fed", 7, Digest(bytes(range(32, 64))), 3)
_PIN_LONG = 2 * (1 << 16) + 5  # crosses two packing chunks
_PINNED_SHORT = {
    1: '0f8c42c5d862fc092d97f1cb19fd26a0b792477b3dbc06c8f41d59327f6cb922',
    7: 'b55785199ffb282b3ac3e07e7e9cce35fe7bfc0bf728eec99b3f20dab4caa395',
    8: '809ce867b6668f146d1ea3da13e3c1b5bca50a70507c7bd150fabfc1f63a3ff9',
    12: '1444de5a4d67674539e7965ea477a0e27619ccae6d934f0ee62ce45d3ce06a96',
    16: '9bc2a4bd5db513003d598358a2e21bbee4d94fb82f40a5275c100174395f6a12',
    31: 'b8a1f999ba292b023a47ccbfda198a2d6596dd8087457eba61b5573f59f73de9',
    32: '6dfd0999f95042d7804b77dc4aaf8811d4f735a253ede11972ea02e2ac33e656',
    33: 'd75ed81f133db9c6ed66aa61df4a3aaff704787f3c777de52183024d4ab0024d',
    63: 'd667992ed8d8ec97b7fa52abccc6ec2f368d5efeebdeec8bb38e4ffcd492ca6d',
    64: '76f7215512ad514a9985f37604fb4db947a93201fefa63e6d1fdc996471123a6',
}
_PINNED_LONG = {
    1: '795bde000eae5104c416e8ede66a0a4f0b4eff08c4e17d6ae66025140e905fd6',
    7: '25b18ec4b696849a4a46129783bfed0f0ca05ba92a3c6be660142d6d26ae5c6f',
    8: '97eb548316559c0091b7d060345a27e10800a79f05c9019bea8c3705544d0928',
    12: 'de0ff12681a41135e69daf59c4beb6a4629eae3a3c052a33c7ff44a1971fa5f7',
    16: '3ce539dd35812c7623d13b83b647d03a62c2a0351d1ee1f3d863c6430b3d0444',
    31: '7f66d51c506d0d85c9a252d23b71af68229984587c6ce7919650f46987f01c10',
    32: '275f8b3376a60efb0c160e22bc3af79d6654e3469e2ffa17ce71365399d77a9d',
    33: '5a44d024a41e4307a23e7cbe22e59b8a2853c6dfa0bd7f1350a6618a02f6b165',
    63: 'b9369a07f533d620fae5e0f645e6167a3a93d544153bac43937c3b8865fa800c',
    64: '060e05b99aac7454c7b76d46526cfd4284584f9fd6c691dced983ad6fff6e7bf',
}
_PINNED_ROUNDS = {  # bits: (messages in transit, sha256 of them all and of the sum)
    1: (39, '7c1a4a9f074bdc33732104a080206fe85d281669bb4f3330ad31003e7920615a'),
    12: (39, 'e0ef3ef2c05c16486869ee38349e910823f349e0df2a540e2ee025ab3d5d0da1'),
    32: (39, 'eaf217435e0aad65ca63d84500ecb9c5a9c93008ef765ff7b8fec096b1c14fec'),
    33: (39, '91d5b55d850d9181008e591d5b3fd356f8fc6e6a1b7ea353b3c2037fab2a490a'),
    64: (39, 'fca11bca3f62d9b29d371afd6af1d40365edd568b1259209c536ad5af05046b3'),
}


def _pin_values(bits: int, count: int) -> list[int]:
    top = (1 << bits) - 1
    values = [(i * 0x9E3779B97F4A7C15 + 0x0123456789ABCDEF) & top for i in range(count)]
    values[0], values[1] = 0, top
    return values


def _documented_core(header: m.Header, bits: int, values: list[int]) -> bytes:
    """Header, bits (u8), count (u64) and coordinate i at bits [i*b, (i+1)*b), LSB first."""
    fed = header.federation.encode()
    head = bytes([m.Kind.MASKED_INPUT, Stage.MASKED_INPUT]) + len(fed).to_bytes(4, "big") + fed \
        + header.round.to_bytes(8, "big") + header.config.raw + header.sender.to_bytes(4, "big")
    stream = sum(v << (i * bits) for i, v in enumerate(values))
    packed = stream.to_bytes((len(values) * bits + 7) // 8, "little")
    return head + bytes([bits]) + len(values).to_bytes(8, "big") + packed


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("bits", _PIN_WIDTHS)
def test_masked_input_bytes_are_pinned(bits: int) -> None:
    values = _pin_values(bits, 11)
    for words in (np.array(values, dtype=np.uint64), np.array(values, dtype=Ring(bits).word)):
        msg = m.MaskedInput.create(_PIN_IDENTITY, _PIN_HEADER, bits=bits, words=words)
        assert msg.core() == _documented_core(_PIN_HEADER, bits, values)
        assert _sha(msg.encode()) == _PINNED_SHORT[bits]
        back = m.decode(msg.encode())
        assert isinstance(back, m.MaskedInput) and back.verify(_PIN_IDENTITY.public)
        assert [int(v) for v in back.words] == values and back.encode() == msg.encode()
    i = np.arange(_PIN_LONG, dtype=np.uint64)
    long = (i * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x0123456789ABCDEF)) \
        & np.uint64(2**64 - 1 if bits == 64 else (1 << bits) - 1)
    msg = m.MaskedInput.create(_PIN_IDENTITY, _PIN_HEADER, bits=bits, words=long)
    assert _sha(msg.encode()) == _PINNED_LONG[bits]


@pytest.mark.parametrize("bits", sorted(_PINNED_ROUNDS))
def test_round_transcript_is_pinned(bits: int) -> None:
    """Every message of a deterministic round with a dropout, byte for byte, and its sum."""
    f = federation(5, 4, 3, bits=bits, length=9, seed=40 + bits)
    wires: list[bytes] = []

    def record(stage: Stage, src: int, dst: int, msg: m.Message) -> m.Message:
        wires.append(msg.encode())
        return msg

    rng = np.random.default_rng(bits)
    xs = {i: rng.integers(0, 1 << min(bits, 63), 9, dtype=np.uint64) for i in range(5)}
    res = run_round(f.config, f.server(), f.clients(), xs, drop={Stage.MASKED_INPUT: {2}},
                    intercept=record)
    assert res.total is not None
    np.testing.assert_array_equal(res.total, ring_sum([xs[i] for i in (0, 1, 3, 4)], bits))
    digest = hashlib.sha256()
    for w in wires:
        digest.update(len(w).to_bytes(4, "big") + w)
    digest.update(np.asarray(res.total, dtype="<u8").tobytes())
    assert (len(wires), digest.hexdigest()) == _PINNED_ROUNDS[bits]


# -- masks ----------------------------------------------------------------------------------------

def test_masked_vector_is_uniform_in_the_ring() -> None:
    """Chi-square of what the server sees from one client whose input is all zeros."""
    bits, length = 16, 1 << 17
    f = federation(4, 3, 2, bits=bits, length=length, seed=12)
    seen: dict[int, np.ndarray] = {}

    def grab(stage: Stage, src: int, dst: int, msg: m.Message) -> m.Message:
        if isinstance(msg, m.MaskedInput):
            seen[src] = np.asarray(msg.words, dtype=np.uint64)
        return msg

    xs = {i: np.zeros(length, dtype=np.uint64) for i in range(4)}
    xs[1][:] = 12345
    res = run_round(f.config, f.server(), f.clients(), xs, intercept=grab)
    assert res.total is not None and set(res.total.tolist()) == {12345}
    for i in (0, 1):
        y = seen[i]
        for buckets in (y >> np.uint64(bits - 8), y & np.uint64(0xFF)):  # top and low byte
            counts = np.bincount(buckets.astype(np.int64), minlength=256)
            expected = length / 256
            chi2 = float(((counts - expected) ** 2 / expected).sum())
            assert chi2 < _chi2_critical(255, 1e-6), chi2
        assert np.unique(y).size > 0.6 * (1 << bits)


def _chi2_critical(df: int, alpha: float) -> float:
    """Wilson-Hilferty upper quantile of chi-square with df degrees of freedom."""
    z = math.sqrt(2) * _erfcinv(2 * alpha)
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _erfcinv(y: float) -> float:
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erfc(mid) > y else (lo, mid)
    return lo


def test_mask_seeds_are_bound_to_round_pair_and_purpose() -> None:
    f, g = federation(4, 3, 2, seed=13), federation(4, 3, 2, seed=13, rnd=8)
    from genofed.protocol.secagg.keys import AgreementKeyPair, SelfMaskSeed

    a, b = AgreementKeyPair.generate(f.entropy), AgreementKeyPair.generate(f.entropy)
    ab = pair_seed(a.secret, b.public, f.config.context, 0, 1)
    assert ab == pair_seed(b.secret, a.public, f.config.context, 1, 0)
    others: list[MaskSeed] = [pair_seed(a.secret, b.public, g.config.context, 0, 1),
                              pair_seed(a.secret, b.public, f.config.context, 0, 2)]
    bu = SelfMaskSeed(b.secret.raw)
    others += [self_seed(bu, f.config.context, 1), self_seed(bu, f.config.context, 0)]
    assert len({ab, *others}) == 5
    with pytest.raises(ParameterError):
        pair_seed(a.secret, b.public, f.config.context, 2, 2)


# -- Shamir ---------------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.data())
def test_lagrange_weights_equal_exact_arithmetic(data: st.DataObject) -> None:
    """The sliced, one-inversion weights against Python integers, at 0, at a point per row
    (sometimes an x of the row), over slices of every size."""
    p = shamir.P
    t = data.draw(st.integers(1, 9))
    rows = data.draw(st.integers(1, 7))
    small = data.draw(st.booleans())
    xs = np.array([data.draw(st.lists(st.integers(1, 40 if small else p - 1), min_size=t,
                                      max_size=t, unique=True)) for _ in range(rows)],
                  dtype=np.uint64)
    at = [int(data.draw(st.sampled_from(list(r)))) if data.draw(st.booleans())
          else data.draw(st.integers(0, p - 1)) for r in xs]
    old = shamir.CHUNK_ELEMENTS
    shamir.CHUNK_ELEMENTS = data.draw(st.integers(1, 200))
    try:
        got = shamir.lagrange_at(xs, np.array(at, dtype=np.uint64))
    finally:
        shamir.CHUNK_ELEMENTS = old
    for i, (r, a) in enumerate(zip(xs.tolist(), at, strict=True)):
        want = []
        for j, xj in enumerate(r):
            num = den = 1
            for i_m, xm in enumerate(r):
                if i_m != j:
                    num, den = num * (a - xm) % p, den * (xj - xm) % p
            want.append(num * pow(den, p - 2, p) % p)
        assert got[i].tolist() == want, (r, a)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30), st.data())
def test_shamir_any_t_shares_reconstruct(k: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, k))
    xs = np.array(data.draw(st.lists(st.integers(1, 10**6), min_size=k, max_size=k,
                                     unique=True)), dtype=np.uint64)
    secrets = np.frombuffer(data.draw(st.binary(min_size=96, max_size=96)),
                            dtype=np.uint8).reshape(3, 32)
    shares = shamir.split(secrets, xs, t, Entropy(k))
    pick = data.draw(st.permutations(range(k)))[:t]
    got = shamir.combine(np.tile(xs[pick], (3, 1)), shares[:, pick, :])
    np.testing.assert_array_equal(got, secrets)
    wire = shamir.shares_from_bytes(shamir.shares_to_bytes(shares[1]))
    np.testing.assert_array_equal(wire, shares[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 20), st.data())
def test_shamir_t_minus_1_shares_fit_any_secret(t: int, data: st.DataObject) -> None:
    """Information-theoretic: for every candidate secret there is a t-th share completing the
    t-1 observed ones to it, so t-1 shares say nothing about which secret was shared."""
    k = t + 2
    xs = np.arange(1, k + 1, dtype=np.uint64) * 7
    secret = np.frombuffer(data.draw(st.binary(min_size=32, max_size=32)), dtype=np.uint8)
    shares = shamir.split(secret.reshape(1, 32), xs, t, Entropy(t))[0]
    seen_x, seen_y = xs[:t - 1], shares[:t - 1]
    rival = np.frombuffer(data.draw(st.binary(min_size=32, max_size=32)), dtype=np.uint8)
    # The polynomial through (0, rival) and the t-1 seen shares, evaluated at a t-th x.
    px = np.concatenate([[0], seen_x]).astype(np.uint64)
    limbs = shamir.secrets_to_limbs(rival.reshape(1, 32))
    py = np.concatenate([limbs, seen_y])
    completion = shamir.interpolate(_nonzero_shift(px)[None], py[None], int(xs[t - 1]) + 1)[0]
    got = shamir.combine(xs[None, :t], np.concatenate([seen_y, completion[None]])[None])
    np.testing.assert_array_equal(got[0], rival)
    np.testing.assert_array_equal(shamir.combine(xs[None, :t], shares[None, :t])[0], secret)


def _nonzero_shift(xs: np.ndarray) -> np.ndarray:
    """interpolate() takes non-zero x's: shift every x by one (and evaluate at x + 1)."""
    return xs + np.uint64(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, shamir.P - 1), min_size=1, max_size=50), st.data())
def test_field_arithmetic_matches_integers(a: list[int], data: st.DataObject) -> None:
    b = data.draw(st.lists(st.integers(1, shamir.P - 1), min_size=len(a), max_size=len(a)))
    A, B = np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)
    P = shamir.P
    assert [int(v) for v in shamir.mulmod(A, B)] == [x * y % P for x, y in zip(a, b, strict=True)]
    assert [int(v) for v in shamir.addmod(A, B)] == [(x + y) % P for x, y in zip(a, b, strict=True)]
    assert [int(v) for v in shamir.invmod(B)] == [pow(y, P - 2, P) for y in b]


def test_shamir_refuses_bad_input() -> None:
    s = np.zeros((1, 32), dtype=np.uint8)
    for xs, t in (([1, 1, 2], 2), ([0, 1, 2], 2), ([1, 2, 3], 4), ([1, 2, 3], 0)):
        with pytest.raises(ParameterError):
            shamir.split(s, np.array(xs), t)
    assert ShareValue.SIZE == shamir.SHARE_BYTES


# -- parameters and the graph ---------------------------------------------------------------

@pytest.mark.parametrize("n, corrupt, dropout, k, t_max", [
    # fcp/secagg/server/graph_parameter_finder_test.cc, SEMI_MALICIOUS_SERVER rows
    (10, 0.05, 0.33, 8, 5), (100, 0.05, 0.33, 72, 39), (1000, 0.05, 0.33, 398, 223),
    (100, 0.05, 0.05, 16, 11), (1000, 0.05, 0.05, 52, 37), (100, 0.3, 0.3, 92, 62),
    (10, 0.33, 0.05, 4, 4), (100, 0.33, 0.05, 42, 37), (1000, 0.33, 0.0, 38, 37),
    (100, 0.0, 0.33, 68, 35), (10, 0.0, 0.0, 2, 2),
])
def test_parameters_match_published_table(n: int, corrupt: float, dropout: float, k: int,
                                          t_max: int) -> None:
    p = choose_parameters(n, corrupt, dropout)
    assert p.k == k and p.t <= t_max and 2 * p.t > p.k


@pytest.mark.parametrize("n, k, t, why", [
    (10, 4, 2, "k/2"), (10, 6, 7, "exceeds"), (10, 5, 4, "even"), (10, 10, 6, "n-1"),
    (10, 2, 1, ">= 2"), (2, 1, 1, "n >= 3"),
])
def test_unsafe_parameters_are_refused(n: int, k: int, t: int, why: str) -> None:
    with pytest.raises(ParameterError, match=why):
        SecAggParams(n, k, t)


def test_unsafe_rates_are_refused() -> None:
    with pytest.raises(ParameterError, match="below the threshold"):
        SecAggParams(100, 32, 22).check_dropout(0.4)
    SecAggParams(100, 32, 22).check_dropout(0.1)
    with pytest.raises(ParameterError, match=r"0\.9"):
        choose_parameters(100, 0.33, 0.33)
    with pytest.raises(ParameterError):
        choose_parameters(100, -0.1, 0.1)


@pytest.mark.parametrize("n, k", [(7, 2), (12, 4), (12, 11), (30, 10)])
def test_graph_is_a_regular_symmetric_permuted_harary_graph(n: int, k: int) -> None:
    key = MaskSeed(bytes(range(32)))
    g = NeighbourGraph(n, k, key)
    for u in range(n):
        assert len(g.neighbours(u)) == k and u not in g.neighbours(u)
        assert all(u in g.neighbours(v) for v in g.neighbours(u))
    again = NeighbourGraph(n, k, key)
    assert all(g.neighbours(u) == again.neighbours(u) for u in range(n))
    if k < n - 1:
        other = NeighbourGraph(n, k, MaskSeed(bytes(32)))
        assert any(g.neighbours(u) != other.neighbours(u) for u in range(n))


def test_config_binds_every_field() -> None:
    f = federation(5, 4, 3, seed=14)
    variants: list[Callable[[RoundConfig], RoundConfig]] = [
        lambda c: dataclasses.replace(c, round=c.round + 1),
        lambda c: dataclasses.replace(c, federation="other"),
        lambda c: dataclasses.replace(c, ring=Ring(31)),
        lambda c: dataclasses.replace(c, length=c.length + 1),
        lambda c: dataclasses.replace(c, graph_seed=GraphSeed(bytes(32))),
        lambda c: dataclasses.replace(c, params=SecAggParams(5, 4, 4)),
    ]
    digests = {f.config.digest} | {v(f.config).digest for v in variants}
    assert len(digests) == len(variants) + 1
    with pytest.raises(ParameterError):
        SecAggClient(f.config, 2, f.ids[3])
