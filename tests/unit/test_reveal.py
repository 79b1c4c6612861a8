"""Wrong shares revealed in Unmasking: located by the shares' redundancy, set aside, and blamed
only where one client must be the cause (`protocol/secagg/reveal.py`)."""

from __future__ import annotations

import numpy as np
import pytest
from support import disrupt
from support.secagg_rounds import Entropy, Federation, federation, inputs_for, ring_sum

from genofed.protocol.secagg import messages as m
from genofed.protocol.secagg import reveal, shamir
from genofed.protocol.secagg.blame import INCONSISTENT
from genofed.protocol.secagg.driver import Intercept, run_round
from genofed.protocol.secagg.keys import ShareValue
from genofed.protocol.secagg.messages import Stage


def _dealt(owners: int, holders: int, t: int, seed: int) -> tuple[reveal.Held, np.ndarray]:
    """Each owner's secret shared to holders 0..holders-1 (x = holder + 1), all honest."""
    secrets = np.frombuffer(Entropy(seed)(32 * owners), dtype=np.uint8).reshape(owners, 32)
    xs = np.arange(1, holders + 1, dtype=np.uint64)
    shares = shamir.split(secrets.copy(), xs, t, Entropy(seed + 1))
    held = {100 + v: [(j, ShareValue(b)) for j, b in
                      enumerate(shamir.shares_to_bytes(shares[v]))] for v in range(owners)}
    return held, secrets


def _off_by_one(held: reveal.Held, owner: int, holder: int) -> None:
    group = held[owner]
    i = next(i for i, (j, _) in enumerate(group) if j == holder)
    raw = bytearray(group[i][1].raw)
    raw[0] ^= 1
    group[i] = (holder, ShareValue(bytes(raw)))


def _rebuilt(held: reveal.Held, t: int) -> dict[int, bytes]:
    out = {}
    for v, g in held.items():
        xs = np.array([[j + 1 for j, _ in g[:t]]], dtype=np.uint64)
        ys = shamir.shares_from_bytes([s.raw for _, s in g[:t]]).reshape(1, t, shamir.LIMBS)
        out[v] = bytes(shamir.combine(xs, ys)[0])
    return out


@pytest.mark.parametrize("liar", [0, 2, 4, 7])  # in the first window, both, the last
def test_a_holder_wrong_for_two_owners_is_blamed_and_its_shares_set_aside(liar: int) -> None:
    t, holders = 5, 8
    held, secrets = _dealt(3, holders, t, seed=liar)
    _off_by_one(held, 100, liar)
    _off_by_one(held, 102, liar)
    verdict = reveal.examine(held, t)
    assert verdict.blame.keys() == {liar}
    assert "revealed shares of clients [100, 102]" in verdict.blame[liar]
    assert sorted(verdict.set_aside) == [(100, liar), (102, liar)]
    assert verdict.unresolved == {}
    got = _rebuilt(verdict.held, t)
    assert [got[100 + v] for v in range(3)] == [bytes(s) for s in secrets]


def test_one_wrong_share_of_one_secret_is_set_aside_blaming_no_one() -> None:
    """Its holder may have lied, or its dealer dealt it wrong: one misfit cannot tell."""
    t = 4
    held, secrets = _dealt(2, 6, t, seed=11)
    _off_by_one(held, 101, 3)
    verdict = reveal.examine(held, t)
    assert verdict.set_aside == [(101, 3)] and verdict.blame == {}
    assert _rebuilt(verdict.held, t)[101] == bytes(secrets[1])


def test_a_dealer_whose_secret_has_two_wrong_shares_is_blamed() -> None:
    t = 4
    held, _ = _dealt(2, 7, t, seed=12)
    _off_by_one(held, 100, 1)
    _off_by_one(held, 100, 5)
    verdict = reveal.examine(held, t)
    assert verdict.blame.keys() == {100} and 100 in verdict.unresolved


def test_a_misfit_among_t_plus_one_shares_cannot_be_located() -> None:
    t = 4
    held, _ = _dealt(1, 5, t, seed=13)
    _off_by_one(held, 100, 2)
    verdict = reveal.examine(held, t)
    assert verdict.blame == {} and verdict.set_aside == []
    assert "t + 2 = 6 are needed" in verdict.unresolved[100]


def test_honest_shares_pass_untouched() -> None:
    held, _ = _dealt(4, 9, 5, seed=14)
    verdict = reveal.examine(held, 5)
    assert verdict == reveal.Verdict(held=held)


def _lying(f: Federation, liar: int, count: int | None) -> Intercept:
    """The driver's intercept: `liar`'s unmasking answer with `count` shares off by one."""
    def tamper(stage: Stage, src: int, dst: int, msg: m.Message) -> m.Message:
        if src != liar:
            return msg
        return m.decode(disrupt.wrong_reveal(msg.encode(), f.ids[liar], count=count))
    return tamper


def test_a_client_that_reveals_wrong_shares_is_excluded_and_the_round_completes() -> None:
    """Seven clients, k=6, t=4: client 3 answers Unmasking with every share off by one, signed.
    Before, the round aborted ("shares do not reconstruct"); now client 3 is blamed and the sum
    is exact (its own input stays in it, its self mask rebuilt from the others' shares)."""
    f = federation(7, 6, 4, seed=170)
    xs = inputs_for(f)
    res = run_round(f.config, f.server(), f.clients(), xs, intercept=_lying(f, 3, None))
    assert {i: b.kind for i, b in res.culprits.items()} == {3: INCONSISTENT}
    assert res.total is not None
    np.testing.assert_array_equal(res.total, ring_sum(list(xs.values()), 32))


def test_too_few_shares_to_locate_a_wrong_one_aborts_saying_why() -> None:
    f = federation(5, 4, 3, seed=171)  # each secret has at most 4 = t + 1 holders
    res = run_round(f.config, f.server(), f.clients(), inputs_for(f),
                    intercept=_lying(f, 0, 1))
    assert res.aborted is not None and "t + 2 = 5 are needed to tell which is wrong" in \
        res.aborted
    assert res.culprits == {}
