"""Blame for provable disruption: which client leaves a round, on what signed evidence.

One device with a valid identity could stop every round it was in: an unusable key made each
neighbour's key agreement fail, garbage in its sealed shares made each neighbour's opening
fail, and either way the neighbours stopped answering. Now the aggregator excludes such a
client from the round, on evidence it checks itself, and the round goes on without it:

- An advertised key that is not usable (`keys.py`: a small-order or non-canonical X25519
  key, a sealing key outside the prime-order group, a key the round already has) is public:
  the advert is refused on arrival, and the client is simply not in U1.
- A bundle that does not open. Its sender signed it (its EncryptedShares signs the Merkle
  root of all its bundles, `merkle.py`), the aggregator relays that signature with the leaf's
  path (`messages.Relayed`), and the recipient accuses the sender only of a bundle that the
  path and signature prove the sender's, so no one but the sender can be the source. The
  recipient holds none of the sender's shares and leaves their pair mask out of its
  MaskedInput; the accusation in it reveals the pairwise key K of the two with a proof that
  K is c_i * C_j for their advertised keys (`proof.py`). The aggregator checks the proof,
  opens the signed bundle with K by the recipient's own rule (`sealing.open_bundle`), and
  blames the sender if it does not open, the accuser if it does or if the proof fails. A
  false accusation thus excludes the accuser (its MaskedInput is refused whole) and never the
  honest sender.
- Any other signed message of the current stage that breaks the protocol (shares sealed to
  the wrong peers, a masked input of the wrong shape, an endorsement of another survivor set,
  an answer for peers not asked about or with shares outside the field): a ProtocolViolation
  that names its sender. A duplicate (ReplayedMessage) is not blamed: a network can make one.

Why K and not the recipient's secret c_i. c_i would open every bundle sent to or by the
recipient this round: one share of s and b of each of its neighbours, and all of its own
shares. The recipient would then have to leave the round (its s and b known), and worse, one
corrupt client that seals garbage to all k neighbours would make k honest clients reveal, so
the aggregator would hold both share kinds from up to k - 1 holders of a client next to it on
the ring: far more than the 2t - k - 1 corrupt holders that `params.py` chooses t against. K
opens only the two bundles between the accuser and the accused, which the accused can open
itself: a true accusation tells a server colluding with the accused nothing new, a false one
tells it only what the (then corrupt) accuser already knew. So accusers count as honest in the
threshold analysis, stay in the round, and answer Unmasking like anyone else.

What exclusion does to the round. An excluded client is a dropout from the stage it was
caught at: not in U1 (advert), not in U2 (shares), not in U3 (masked input, or accused: its
input is summed only when MaskedInputCollection closes, so a later accusation still keeps it
out), not an endorser or unmasker (later stages: its input stays in the sum and its self mask
comes off with its neighbours' shares, as for any survivor). An accused client's accusers
hold none of its shares and never masked with it, so its mask key is rebuilt from its other
neighbours and its pair masks come off only with them; if every neighbour accused it, nothing
of it is in the sum and nothing needs rebuilding. The round completes when each client whose
secrets must be rebuilt keeps t holders that answer (`server.py` checks it after each stage).
So a client that seals garbage to all its k neighbours, or to at most k - t of them, costs the
round only itself; one that seals garbage to a of them with k - t < a < k leaves its mask key
with fewer than t holders: the round aborts below threshold, with it named and rested, and
the next round goes on without it.

Wrong share values, dealt in a well-formed bundle or revealed in Unmasking, are found by the
shares' own redundancy when the server rebuilds secrets (`reveal.py`: set aside, and blamed as
INCONSISTENT where one client must be the cause). What is not caught: a dealer whose shares
are consistent but of another secret than the one it masked with; the sum is then garbage and
the aggregate's own check is the backstop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from genofed.protocol.secagg.messages import Accusation, AdvertiseKeys, EncryptedShares
from genofed.protocol.secagg.prg import RoundContext
from genofed.protocol.secagg.proof import verify
from genofed.protocol.secagg.sealing import UnopenedBundle, accusation_context, open_bundle

INVALID_KEY, BAD_SHARES, FALSE_ACCUSATION, VIOLATION, INCONSISTENT = (
    "invalid_key", "bad_shares", "false_accusation", "violation", "inconsistent")


@dataclass(frozen=True)
class Blame:
    """Client `client` is excluded from the round: `kind` (one of the five above) and why."""

    client: int
    kind: str
    reason: str


def advert_fault(advert: AdvertiseKeys, taken: Mapping[int, AdvertiseKeys]) -> str | None:
    """Why an advert cannot be taken (a key that is unusable, or already in the round)."""
    if not advert.c_pk.usable():
        return "a sealing key outside the prime-order group"
    if not advert.s_pk.usable():
        return "a mask key of small order or not canonical"
    if advert.c_pk.raw == advert.s_pk.raw:
        return "the same key twice"
    for j, other in taken.items():
        if {advert.c_pk.raw, advert.s_pk.raw} & {other.c_pk.raw, other.s_pk.raw}:
            return f"a key client {j} advertised first"
    return None


def judge(ctx: RoundContext, accuser: int, accusation: Accusation,
          adverts: Mapping[int, AdvertiseKeys], shares: Mapping[int, EncryptedShares],
          neighbours: frozenset[int]) -> Blame:
    """Whom an accusation proves at fault: the accused, or the accuser."""
    j = accusation.accused
    sent = shares.get(j)
    bundle = None if sent is None or j not in neighbours else next(
        (s for s in sent.sealed if s.peer == accuser), None)
    if bundle is None:
        return Blame(accuser, FALSE_ACCUSATION,
                     f"client {accuser} accused client {j}, which sealed it no shares")
    if not verify(adverts[accuser].c_pk, adverts[j].c_pk, accusation.proof,
                  accusation_context(ctx, accuser, j)):
        return Blame(accuser, FALSE_ACCUSATION, f"client {accuser} accused client {j} with a "
                     "key that its proof does not show to be theirs")
    try:
        open_bundle(accusation.proof.key, ctx, j, accuser, bundle.ciphertext)
    except UnopenedBundle as exc:
        return Blame(j, BAD_SHARES, f"client {j} sealed shares to client {accuser} that do "
                     f"not open ({exc}), shown with their pairwise key")
    return Blame(accuser, FALSE_ACCUSATION,
                 f"client {accuser} accused client {j}, whose shares to it open")
