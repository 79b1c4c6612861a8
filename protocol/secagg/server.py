"""The aggregator's side of a round: a state machine with no I/O.

    server = SecAggServer(config, identity)
    for each stage:
        server.receive(client_message)     # as they arrive; each is checked, then kept
        outbox = server.advance()          # at the stage's deadline: {client: message}
    server.result                          # the sum of the survivors' inputs, a ring vector

U1..U5 are the clients heard from at each stage. After every stage the server checks that the
round can still finish: each client whose secrets may have to be rebuilt keeps at least t live
neighbours holding its shares (and at stage 0, each client has at least t advertised
neighbours to share with); otherwise it raises RoundAborted, before any share is asked for.
The sum reveals nothing else: it is unmasked with the self-mask seeds of the survivors U3 and
the mask keys of the dropped U2 - U3, never both for one client.

A client whose signed message provably disrupts the round is excluded from it (`culprits`,
`blame.py`): its message is refused, and so is every later one of the round; to the round it
is a dropout from that stage on.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import numpy as np

from genofed.protocol.ring import RingError, RingVector
from genofed.protocol.secagg import merkle, reveal, shamir
from genofed.protocol.secagg.blame import (
    FALSE_ACCUSATION,
    INVALID_KEY,
    VIOLATION,
    Blame,
    advert_fault,
    judge,
)
from genofed.protocol.secagg.config import RoundConfig
from genofed.protocol.secagg.errors import (
    Disruption,
    ForgedMessage,
    MalformedMessage,
    ParameterError,
    ProtocolViolation,
    ReplayedMessage,
    RoundAborted,
    SecAggError,
    WrongRound,
)
from genofed.protocol.secagg.keys import (
    AgreementSecretKey,
    Digest,
    SelfMaskSeed,
    ShareValue,
    Signature,
    SigningIdentity,
)
from genofed.protocol.secagg.messages import (
    SERVER,
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    Endorsement,
    Header,
    KeyList,
    MaskedInput,
    Message,
    Relayed,
    ServerMessage,
    ShareDelivery,
    Stage,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    survivors_digest,
)
from genofed.protocol.secagg.prg import apply_mask, pair_seed, self_seed

log = logging.getLogger(__name__)
Outbox = dict[int, ServerMessage]


class SecAggServer:
    """The aggregator of one round."""

    def __init__(self, config: RoundConfig, identity: SigningIdentity) -> None:
        if identity.public != config.server:
            raise SecAggError("server identity does not match the round configuration")
        self.config, self.stage = config, Stage.ADVERTISE_KEYS
        self._identity, self._ctx, self._graph = identity, config.context, config.graph
        self._t = config.params.t
        self._adverts: dict[int, AdvertiseKeys] = {}  # U1
        self._sealed: dict[int, EncryptedShares] = {}  # U2
        self._inputs: dict[int, RingVector] = {}  # summed when the stage closes: U3
        self._sum = config.ring.zeros(config.length)
        self._survivors: tuple[int, ...] = ()
        self._u3: frozenset[int] | None = None  # once MaskedInputCollection closed
        self._accusers: dict[int, set[int]] = {}  # accused -> who proved its shares bad
        self._culprits: dict[int, Blame] = {}
        self._digest: Digest | None = None
        self._endorsements: dict[int, Signature] = {}  # U4
        self._asked: dict[int, UnmaskRequest] = {}
        self._answers: dict[int, UnmaskShares] = {}  # U5
        self._result: RingVector | None = None
        self._aborted: str | None = None

    @property
    def survivors(self) -> tuple[int, ...]:
        """U3: the clients whose inputs are in the sum (after MaskedInputCollection)."""
        return self._survivors

    @property
    def culprits(self) -> dict[int, Blame]:
        """The clients excluded for provable disruption, in the order they were caught."""
        return dict(self._culprits)

    @property
    def result(self) -> RingVector:
        """The sum of the survivors' inputs, a ring vector; only after Unmasking."""
        if self._result is None:
            raise SecAggError(f"round {self.config.round} has no result (stage "
                              f"{self.stage.name}{', aborted' if self._aborted else ''})")
        return self._result

    def receive_bytes(self, data: bytes) -> None:
        """Take one client message off the wire."""
        self.receive(decode(data))

    def receive(self, msg: Message) -> None:
        """Check one decoded client message and keep it for the current stage."""
        if not isinstance(msg, AdvertiseKeys | EncryptedShares | MaskedInput |
                          ConsistencySignature | UnmaskShares):
            raise MalformedMessage(f"{type(msg).__name__} is not a message to the aggregator")
        h, ctx = msg.header, self._ctx
        if (h.federation, h.round, h.config) != (ctx.federation, ctx.round, ctx.config):
            raise WrongRound(f"message of {h.federation!r} round {h.round}, this is "
                             f"{ctx.federation!r} round {ctx.round}")
        if not 0 <= h.sender < self.config.n:
            raise ForgedMessage(f"sender {h.sender} is not an enrolled client of this round")
        if not msg.verify(self.config.roster[h.sender].identity):
            raise ForgedMessage(f"{type(msg).__name__} from client {h.sender} is not signed by "
                                f"{self.config.roster[h.sender].device}")
        if self._aborted is not None:
            raise RoundAborted(f"round {self.config.round} was aborted: {self._aborted}")
        if self.stage != msg.STAGE:
            raise ReplayedMessage(f"{type(msg).__name__} from client {h.sender} during "
                                  f"{self.stage.name}")
        if h.sender in self._culprits:
            raise ProtocolViolation(f"client {h.sender} is excluded from round "
                                    f"{self.config.round}: {self._culprits[h.sender].reason}")
        try:
            if isinstance(msg, AdvertiseKeys):
                self._take_advert(msg)
            elif isinstance(msg, EncryptedShares):
                self._take_sealed(msg)
            elif isinstance(msg, MaskedInput):
                self._take_masked(msg)
            elif isinstance(msg, ConsistencySignature):
                self._take_endorsement(msg)
            else:
                self._take_answer(msg)
        except ReplayedMessage:  # a copy: the network can make one
            raise
        except ProtocolViolation as exc:  # signed by its sender, for this stage: its doing
            self._blame(Blame(h.sender, exc.kind if isinstance(exc, Disruption) else VIOLATION,
                              str(exc)))
            raise

    def advance(self) -> Outbox:
        """Close the current stage; the next stage's messages, or RoundAborted."""
        if self._aborted is not None:
            raise RoundAborted(f"round {self.config.round} was aborted: {self._aborted}")
        step = {Stage.ADVERTISE_KEYS: self._close_advertise, Stage.SHARE_KEYS: self._close_share,
                Stage.MASKED_INPUT: self._close_masked, Stage.CONSISTENCY_CHECK:
                self._close_consistency, Stage.UNMASKING: self._close_unmasking}.get(self.stage)
        if step is None:
            raise SecAggError(f"round {self.config.round} is already complete")
        out = step()
        self.stage = Stage(self.stage + 1)
        return out

    # -- receiving ---------------------------------------------------------------------------

    def _take_advert(self, msg: AdvertiseKeys) -> None:
        j = msg.header.sender
        if j in self._adverts:
            raise ReplayedMessage(f"second AdvertiseKeys from client {j}")
        fault = advert_fault(msg, self._adverts)
        if fault is not None:
            raise Disruption(INVALID_KEY, f"client {j} advertised {fault}")
        self._adverts[j] = msg

    def _take_sealed(self, msg: EncryptedShares) -> None:
        j = msg.header.sender
        expected = self._graph.neighbours(j) & set(self._adverts)
        peers = [s.peer for s in msg.sealed]
        if j in self._sealed:
            raise ReplayedMessage(f"second EncryptedShares from client {j}")
        if j not in self._adverts:
            raise ProtocolViolation(f"client {j} did not advertise keys; its shares are not "
                                    "part of this round")
        if len(set(peers)) != len(peers) or set(peers) != expected:
            raise ProtocolViolation(f"client {j} sealed shares to {sorted(peers)}, not to its "
                                    f"advertised neighbours {sorted(expected)}")
        # j's signature, checked in `receive`, covers every bundle (through their Merkle root)
        self._sealed[j] = msg

    def _take_masked(self, msg: MaskedInput) -> None:
        j, ring = msg.header.sender, self.config.ring
        if j in self._inputs:
            raise ReplayedMessage(f"second MaskedInput from client {j}")
        if j not in self._sealed:
            raise ProtocolViolation(f"client {j} did not share its keys; its masked input is "
                                    "not part of this round")
        if msg.bits != ring.bits or np.shape(msg.words) != (self.config.length,):
            raise MalformedMessage(f"masked input of client {j}: {np.size(msg.words)} values of "
                                   f"{msg.bits} bits, the round wants {self.config.length} of "
                                   f"{ring.bits}")
        try:
            words = ring.check(msg.words, "masked input")
        except RingError as exc:
            raise MalformedMessage(f"masked input of client {j} is not a vector of the ring: "
                                   f"{exc}") from None
        accused = [a.accused for a in msg.accusations]
        if accused != sorted(set(accused)):
            raise ProtocolViolation(f"client {j}'s accusations are not sorted and unique")
        verdicts = [judge(self._ctx, j, a, self._adverts, self._sealed, self._graph.neighbours(j))
                    for a in msg.accusations]
        for v in verdicts:
            if v.client == j:
                raise Disruption(FALSE_ACCUSATION, v.reason)
        for v in verdicts:  # every accusation holds: each accused is out, j's input is in
            self._blame(v)
            self._accusers.setdefault(v.client, set()).add(j)
        self._inputs[j] = words

    def _take_endorsement(self, msg: ConsistencySignature) -> None:
        j = msg.header.sender
        if j in self._endorsements:
            raise ReplayedMessage(f"second ConsistencySignature from client {j}")
        if j not in self._survivors:
            raise ProtocolViolation(f"client {j} is not a survivor; its endorsement is not "
                                    "part of this round")
        if msg.survivors != self._digest:
            raise ProtocolViolation(f"client {j} endorsed another survivor set")
        self._endorsements[j] = msg.signature

    def _take_answer(self, msg: UnmaskShares) -> None:
        j = msg.header.sender
        if j in self._answers:
            raise ReplayedMessage(f"second UnmaskShares from client {j}")
        asked = self._asked.get(j)
        if asked is None:
            raise ProtocolViolation(f"client {j} was not asked for shares")
        for got, want in ((msg.self_shares, asked.self_mask_of), (msg.key_shares, asked.key_of)):
            owners = [s.owner for s in got]
            if len(set(owners)) != len(owners) or not set(owners) <= set(want):
                raise ProtocolViolation(f"client {j} answered for {sorted(owners)}, asked "
                                        f"for {sorted(want)}")
        try:
            shamir.shares_from_bytes([s.share.raw for s in (*msg.self_shares, *msg.key_shares)])
        except ParameterError:
            raise ProtocolViolation(f"client {j} revealed a share that is not a field element") \
                from None
        self._answers[j] = msg

    # -- closing stages ----------------------------------------------------------------------

    def _close_advertise(self) -> Outbox:
        u1 = set(self._adverts)
        if not u1:
            self._abort("no client advertised keys")
        for u in sorted(u1):
            live = len(self._graph.neighbours(u) & u1)
            if live < self._t:
                self._abort(f"client {u} has {live} neighbours with keys, threshold {self._t}")
        return {u: KeyList.create(self._identity, self._header(), recipient=u, adverts=tuple(
            self._adverts[v] for v in sorted(self._graph.neighbours(u) & u1))) for u in sorted(u1)}

    def _close_share(self) -> Outbox:
        u2 = set(self._sealed)
        if not u2:
            self._abort("no client shared its keys")
        self._check_recoverable(u2, "ShareKeys")
        inbox: dict[int, list[Relayed]] = {v: [] for v in u2}
        for u in sorted(u2):
            sent = self._sealed[u]
            paths = merkle.paths([s.leaf() for s in sent.sealed])
            for pos, s in enumerate(sent.sealed):
                if s.peer in inbox:
                    inbox[s.peer].append(Relayed(u, s.ciphertext, pos, len(sent.sealed),
                                                 paths[pos], sent.signature))
        return {v: ShareDelivery.create(self._identity, self._header(), recipient=v,
                                        sealed=tuple(items)) for v, items in inbox.items()}

    def _close_masked(self) -> Outbox:
        self._u3 = frozenset(self._inputs.keys() - self._culprits.keys())
        self._check_recoverable(set(self._u3), "MaskedInputCollection")
        self._survivors = tuple(sorted(self._u3))
        for j in self._survivors:
            np.add(self._sum, self._inputs[j], out=self._sum)
        self._inputs = {}
        self._digest = survivors_digest(self._ctx, self._survivors)
        msg = SurvivorList.create(self._identity, self._header(), survivors=self._survivors)
        return dict.fromkeys(self._survivors, msg)

    def _close_consistency(self) -> Outbox:
        u4 = set(self._endorsements)
        self._check_recoverable(u4, "ConsistencyCheck")
        assert self._digest is not None
        u3, rebuilt = set(self._survivors), set(self._dropped())
        for u in sorted(u4):
            near = self._graph.neighbours(u)
            self._asked[u] = UnmaskRequest.create(
                self._identity, self._header(), recipient=u, survivors=self._digest,
                endorsements=tuple(Endorsement(v, self._endorsements[v])
                                   for v in sorted(near & u4)),
                self_mask_of=tuple(sorted(near & u3)),
                key_of=tuple(sorted(v for v in near & rebuilt
                                    if u not in self._accusers.get(v, ()))))
        return dict(self._asked)

    def _close_unmasking(self) -> Outbox:
        self._check_recoverable(set(self._answers), "Unmasking")
        u3 = set(self._survivors)
        dropped = self._dropped()
        owners = sorted(u3) + dropped
        held: dict[int, list[tuple[int, ShareValue]]] = {v: [] for v in owners}
        for j, ans in sorted(self._answers.items()):
            for s in (*ans.self_shares, *ans.key_shares):
                held[s.owner].append((j, s.share))
        held = self._set_aside_wrong_shares(held)
        for v in owners:
            if len(held[v]) < self._t:
                self._abort(f"{len(held[v])} shares of client {v}, threshold {self._t}")
        secrets = self._reconstruct([held[v][:self._t] for v in owners])
        ring, acc = self.config.ring, self._sum
        for v, secret in zip(owners, secrets, strict=True):
            if v in u3:
                apply_mask(acc, self_seed(SelfMaskSeed(secret), self._ctx, v), ring, -1)
                continue
            key = AgreementSecretKey(secret)
            if key.public() != self._adverts[v].s_pk:
                self._abort(f"shares of client {v}'s mask key do not rebuild its advertised key")
            for w in self._partners(v):
                # w added sign(w, v) * PRG(s_wv); take it out again.
                seed = pair_seed(key, self._adverts[w].s_pk, self._ctx, v, w)
                apply_mask(acc, seed, ring, -1 if w < v else +1)
        self._result = ring.reduce(acc)
        log.info("round %d unmasked: %d survivors, %d dropped", self.config.round, len(u3),
                 len(dropped))
        return {}

    def _set_aside_wrong_shares(self, held: reveal.Held) -> reveal.Held:
        """The revealed shares without those that do not fit (`reveal.py`), blaming where one
        client must be the cause; a misfit that cannot be located aborts the round."""
        verdict = reveal.examine(held, self._t)
        for v, j in verdict.set_aside:
            log.warning("round %d: the share of client %d's secret revealed by client %d does "
                        "not fit the others; set aside", self.config.round, v, j)
        for c, why in sorted(verdict.blame.items()):
            self._blame(Blame(c, reveal.INCONSISTENT, why))
        untrusted = verdict.blame.keys()
        kept = {v: [(j, s) for j, s in g if j not in untrusted] for v, g in verdict.held.items()}
        if verdict.unresolved:
            self._abort(f"shares do not reconstruct: {min(verdict.unresolved.items())[1]}")
        return kept

    def _reconstruct(self, groups: list[list[tuple[int, ShareValue]]]) -> list[bytes]:
        """All secrets at once from exactly t (holder, share) pairs each."""
        if not groups:
            return []
        xs = np.array([[j + 1 for j, _ in g] for g in groups], dtype=np.uint64)
        ys = shamir.shares_from_bytes([s.raw for g in groups for _, s in g])
        try:
            out = shamir.combine(xs, ys.reshape(len(groups), self._t, shamir.LIMBS))
        except SecAggError as exc:
            self._abort(f"shares do not reconstruct: {exc}")
        return [bytes(row) for row in out]

    def _partners(self, v: int) -> list[int]:
        """The survivors that masked with client v: its neighbours in U3 that hold its shares
        (an accuser of v holds none and left v's mask out)."""
        assert self._u3 is not None
        return sorted(self._graph.neighbours(v) & self._u3 - self._accusers.get(v, set()))

    def _dropped(self) -> list[int]:
        """The clients of U2 - U3 whose mask key is rebuilt."""
        assert self._u3 is not None
        return sorted(v for v in self._sealed.keys() - self._u3 if not self._left_out(v))

    def _left_out(self, v: int) -> bool:
        """Whether v was accused and nothing of it is in the sum: every survivor among its
        neighbours accused it, so none masked with it, and its key need not be rebuilt. (A
        plain dropout keeps the rule it always had: t holders, whoever survived.)"""
        return self._u3 is not None and v in self._accusers and v not in self._u3 \
            and not self._partners(v)

    def _check_recoverable(self, alive: set[int], after: str) -> None:
        """Every client whose secrets may be rebuilt keeps t holders of its shares alive."""
        for v in sorted(self._sealed):
            if self._left_out(v):
                continue
            holders = self._graph.neighbours(v) - self._accusers.get(v, set())
            live = len(holders & alive)
            if live < self._t:
                culprit = self._culprits.get(v)
                why = f" (excluded: {culprit.reason})" if culprit else ""
                self._abort(f"after {after}, client {v}{why} has {live} live neighbours holding "
                            f"its shares, threshold {self._t}")

    def _blame(self, b: Blame) -> None:
        if b.client not in self._culprits:
            self._culprits[b.client] = b
            log.warning("round %d: client %d excluded (%s): %s", self.config.round, b.client,
                        b.kind, b.reason)

    def _abort(self, why: str) -> NoReturn:
        self._aborted = why
        log.debug("round %d aborted: %s", self.config.round, why)  # the caller journals it
        raise RoundAborted(f"round {self.config.round} aborted: {why}")

    def _header(self) -> Header:
        return Header.of(self._ctx, SERVER)
