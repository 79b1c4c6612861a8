"""A device's side of a round: a state machine with no I/O, server messages in, its messages out.

    client = SecAggClient(config, index, identity)
    client.set_input(x)                    # a ring vector, any time before stage 2
    out = client.advertise()               # stage 0
    out = client.handle(server_message)    # stages 1-4, one reply each

Every server message is checked before it changes anything: its round (WrongRound), the
aggregator's signature (ForgedMessage), its stage and recipient (ReplayedMessage), every
advert and endorsement inside it (ForgedMessage), and its consistency with what this client
already signed (InconsistentRequest). Below threshold the client aborts (RoundAborted) and
answers nothing more. It reveals the self-mask share of a peer only if that peer is in the
survivor set it signed and at least t neighbours endorsed, the key share only if the peer is
not, and never both for one peer.

One bad peer never stops it. A peer whose advertised key is unusable (which the aggregator
refuses on arrival, so it only sees one from an aggregator that did not) is treated as dropped.
A peer whose bundle does not open, under that peer's own signature, is accused: the client
holds none of its shares, leaves its pair mask out, and puts into its MaskedInput the pairwise
key with the proof that it is the right one (`proof.py`), which costs it nothing (`blame.py`).
A bundle that does not open and is not signed by its sender is the aggregator's doing: the
whole delivery is refused (ForgedMessage), and nothing is revealed.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter

import numpy as np

from genofed.protocol.ring import RingVector
from genofed.protocol.secagg import shamir
from genofed.protocol.secagg.config import RoundConfig
from genofed.protocol.secagg.errors import (
    ForgedMessage,
    InconsistentRequest,
    MalformedMessage,
    ParameterError,
    ReplayedMessage,
    RoundAborted,
    SecAggError,
    WrongRound,
)
from genofed.protocol.secagg.keys import (
    SYSTEM_ENTROPY,
    AgreementKeyPair,
    Digest,
    Entropy,
    MaskSeed,
    PairKey,
    SealKeyPair,
    SelfMaskSeed,
    ShareValue,
    SigningIdentity,
)
from genofed.protocol.secagg.messages import (
    SERVER,
    Accusation,
    AdvertiseKeys,
    ClientMessage,
    ConsistencySignature,
    EncryptedShares,
    Header,
    KeyList,
    MaskedInput,
    Message,
    Relayed,
    RevealedShare,
    Sealed,
    ServerMessage,
    ShareDelivery,
    Stage,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    endorsement_bytes,
    survivors_digest,
)
from genofed.protocol.secagg.prg import apply_mask, pair_seed, self_seed
from genofed.protocol.secagg.proof import prove
from genofed.protocol.secagg.sealing import (
    UnopenedBundle,
    accusation_context,
    open_bundle,
    seal_bundle,
)

log = logging.getLogger(__name__)
SELF_MASK, KEY = "self-mask", "key"


class SecAggClient:
    """One client of one round."""

    def __init__(self, config: RoundConfig, index: int, identity: SigningIdentity, *,
                 entropy: Entropy = SYSTEM_ENTROPY) -> None:
        if not 0 <= index < config.n:
            raise ParameterError(f"client index {index} is outside the roster of {config.n}")
        if identity.public != config.roster[index].identity:
            raise ParameterError(f"identity does not match roster entry {index} "
                                 f"({config.roster[index].device})")
        self.config, self.index, self.stage = config, index, Stage.ADVERTISE_KEYS
        self._identity, self._entropy = identity, entropy
        self._ctx = config.context
        self._neighbours = config.graph.neighbours(index)
        self._input: RingVector | None = None  # our own copy, masked in place at stage 2
        self._c = SealKeyPair.generate(entropy)
        self._s = AgreementKeyPair.generate(entropy)
        self._peers: dict[int, AdvertiseKeys] = {}  # neighbours whose keys we took (U1)
        self._held: dict[int, tuple[ShareValue, ShareValue]] = {}  # peer -> (s, b) shares (U2)
        self._pair: dict[int, MaskSeed] = {}
        self._seal: dict[int, PairKey] = {}
        self._b: SelfMaskSeed | None = None
        self._survivors: frozenset[int] = frozenset()
        self._digest: Digest | None = None
        self._revealed: dict[int, str] = {}
        self._aborted: str | None = None

    @property
    def revealed(self) -> dict[int, str]:
        """Which kind of share this client has revealed, per peer."""
        return dict(self._revealed)

    def set_input(self, x: RingVector) -> None:
        """This round's input: a ring vector of `config.length` values (RingError if not)."""
        if np.shape(x) != (self.config.length,):
            raise ParameterError(f"input has shape {np.shape(x)}, the round wants "
                                 f"({self.config.length},)")
        v = self.config.ring.check(x, "input")
        # the masks go on in place: on check's converted array, or on a copy of the caller's
        self._input = v.copy() if np.may_share_memory(v, x) else v

    def advertise(self) -> AdvertiseKeys:
        """Stage 0: the round's two public keys, signed."""
        self._expect(Stage.ADVERTISE_KEYS)
        self.stage = Stage.SHARE_KEYS
        return AdvertiseKeys.create(self._identity, self._header(), c_pk=self._c.public,
                                    s_pk=self._s.public)

    def handle(self, msg: ServerMessage) -> ClientMessage:
        """Answer one server message."""
        if isinstance(msg, KeyList):
            return self.share_keys(msg)
        if isinstance(msg, ShareDelivery):
            return self.masked_input(msg)
        if isinstance(msg, SurvivorList):
            return self.consistency(msg)
        if isinstance(msg, UnmaskRequest):
            return self.unmask(msg)
        raise MalformedMessage(f"{type(msg).__name__} is not a message to a client")

    def handle_bytes(self, data: bytes) -> bytes:
        """Answer one server message on the wire."""
        msg = decode(data)
        if not isinstance(msg, KeyList | ShareDelivery | SurvivorList | UnmaskRequest):
            raise MalformedMessage(f"{type(msg).__name__} is not a message to a client")
        return self.handle(msg).encode()

    def share_keys(self, msg: KeyList) -> EncryptedShares:
        """Stage 1: check the neighbours' adverts; seal shares of s_sk and b_u to each."""
        self._accept(msg)
        peers: dict[int, AdvertiseKeys] = {}
        for a in msg.adverts:
            j = a.header.sender
            self._check_round(a.header)
            if j not in self._neighbours:
                raise InconsistentRequest(f"client {self.index}: advert of {j}, not a neighbour")
            if j in peers:
                raise ReplayedMessage(f"client {self.index}: two adverts of client {j}")
            if not a.verify(self.config.roster[j].identity):
                raise ForgedMessage(f"client {self.index}: advert of client {j} is not signed "
                                    "by its enrolled identity")
            peers[j] = a
        seal, pair = self._agree(peers)
        peers = {j: peers[j] for j in seal}
        self._need(len(peers), "neighbours advertised keys")
        self._b = SelfMaskSeed(self._entropy(32))
        order = sorted(peers)
        secrets = np.frombuffer(self._s.secret.raw + self._b.raw, dtype=np.uint8).reshape(2, 32)
        shares = shamir.split(secrets, np.array([j + 1 for j in order]), self.config.params.t,
                              self._entropy)
        s_bytes, b_bytes = shamir.shares_to_bytes(shares[0]), shamir.shares_to_bytes(shares[1])
        sealed = tuple(Sealed(j, seal_bundle(seal[j], self._ctx, self.index, j,
                                             ShareValue(s_bytes[pos]), ShareValue(b_bytes[pos])))
                       for pos, j in enumerate(order))
        self._peers, self._seal, self._pair = peers, seal, pair
        self.stage = Stage.MASKED_INPUT
        return EncryptedShares.create(self._identity, self._header(), sealed=sealed)

    def _agree(self, peers: dict[int, AdvertiseKeys]
               ) -> tuple[dict[int, PairKey], dict[int, MaskSeed]]:
        """The sealing keys and pair-mask seeds with each peer whose keys are usable. A key
        that is not (the agreement fails exactly then, `keys.py`), or that shows up twice in
        the round (also as one of ours), makes its peer a dropout to this client, never a
        reason to leave the round."""
        seen = Counter([self._c.public.raw, self._s.public.raw] +
                       [k for a in peers.values() for k in (a.c_pk.raw, a.s_pk.raw)])
        seal: dict[int, PairKey] = {}
        pair: dict[int, MaskSeed] = {}
        for j, a in sorted(peers.items()):
            try:
                if seen[a.c_pk.raw] != 1 or seen[a.s_pk.raw] != 1:
                    raise ForgedMessage("a key that appears twice in the round")
                seal[j] = self._c.secret.agree(a.c_pk)
                pair[j] = pair_seed(self._s.secret, a.s_pk, self._ctx, self.index, j)
            except ForgedMessage as exc:
                seal.pop(j, None)
                log.warning("client %d: client %d advertised an unusable key (%s): treated as "
                            "dropped", self.index, j, exc)
        return seal, pair

    def masked_input(self, msg: ShareDelivery) -> MaskedInput:
        """Stage 2: open the neighbours' shares, accusing those whose bundles do not open;
        send the input plus self and pair masks (with the peers whose shares it holds)."""
        self._accept(msg)
        if self._input is None:
            raise SecAggError(f"client {self.index}: no input set before the masked input stage")
        held: dict[int, tuple[ShareValue, ShareValue]] = {}
        accused: dict[int, Accusation] = {}
        for s in msg.sealed:
            j = s.sender
            if j not in self._peers:
                raise InconsistentRequest(f"client {self.index}: shares from {j}, whose keys "
                                          "it never took")
            if j in held or j in accused:
                raise ReplayedMessage(f"client {self.index}: two share bundles from {j}")
            try:
                held[j] = open_bundle(self._seal[j], self._ctx, j, self.index, s.ciphertext)
            except UnopenedBundle as exc:
                accused[j] = self._accuse(j, s, exc)
        self._need(len(held), "neighbours shared their keys")
        y = self._mask(sorted(held))
        self._held, self._pair, self._seal, self._input = held, {}, {}, None
        self.stage = Stage.CONSISTENCY_CHECK
        return MaskedInput.create(self._identity, self._header(), bits=self.config.ring.bits,
                                  words=y, accusations=tuple(accused[j] for j in sorted(accused)))

    def _accuse(self, j: int, s: Relayed, why: UnopenedBundle) -> Accusation:
        """The accusation of a peer whose bundle did not open, if the peer signed it."""
        if not s.verify(self.config.roster[j].identity, self._ctx, self.index):
            raise ForgedMessage(f"client {self.index}: a bundle relayed as {j}'s does not open "
                                f"and is not signed by {j}") from None
        log.warning("client %d accuses client %d: %s", self.index, j, why)
        proof = prove(self._c.secret, self._peers[j].c_pk,
                      accusation_context(self._ctx, self.index, j), self._entropy)
        return Accusation(j, proof)

    def _mask(self, partners: list[int]) -> RingVector:
        """Input + self mask + sign(i, j) * pair mask for each partner j, reduced mod 2^b; the
        input is masked in place."""
        assert self._input is not None and self._b is not None
        ring, y = self.config.ring, self._input
        apply_mask(y, self_seed(self._b, self._ctx, self.index), ring, +1)
        for j in partners:
            apply_mask(y, self._pair[j], ring, +1 if self.index < j else -1)
        return ring.reduce(y)

    def consistency(self, msg: SurvivorList) -> ConsistencySignature:
        """Stage 3: sign the survivor set if it is consistent with what this client saw."""
        self._accept(msg)
        s = msg.survivors
        if any(b <= a for a, b in itertools.pairwise(s)) or (s and s[-1] >= self.config.n):
            raise InconsistentRequest(f"client {self.index}: survivor list is not sorted, "
                                      "unique and within the roster")
        survivors = frozenset(s)
        if self.index not in survivors:
            raise InconsistentRequest(f"client {self.index}: survivor list leaves out this "
                                      "client, which sent its masked input")
        live = survivors & self._neighbours
        if not live <= self._held.keys():
            missing = sorted(live - set(self._held))
            raise InconsistentRequest(f"client {self.index}: survivors {missing} never shared "
                                      "keys with it")
        self._need(len(live), "neighbours survive")
        self._survivors, self._digest = survivors, survivors_digest(self._ctx, s)
        self.stage = Stage.UNMASKING
        return ConsistencySignature.create(self._identity, self._header(), survivors=self._digest)

    def unmask(self, msg: UnmaskRequest) -> UnmaskShares:
        """Stage 4: with >= t neighbours' endorsements of the same survivor set, reveal shares."""
        self._accept(msg)
        if msg.survivors != self._digest:
            raise InconsistentRequest(f"client {self.index}: request names a survivor set it "
                                      "did not sign")
        assert self._digest is not None
        signers: set[int] = set()
        for e in msg.endorsements:
            if e.signer in signers or e.signer not in self._neighbours & self._survivors:
                raise InconsistentRequest(f"client {self.index}: endorsement by {e.signer}, not "
                                          "a surviving neighbour, or twice")
            if not self.config.roster[e.signer].identity.verify(
                    endorsement_bytes(self._ctx, e.signer, self._digest), e.signature):
                raise ForgedMessage(f"client {self.index}: endorsement by {e.signer} does not "
                                    "verify for the survivor set it signed")
            signers.add(e.signer)
        self._need(len(signers), "neighbours endorsed the survivor set")
        wanted_b, wanted_s = msg.self_mask_of, msg.key_of
        named = list(wanted_b) + list(wanted_s)
        if len(set(named)) != len(named):
            raise InconsistentRequest(f"client {self.index}: request names a peer twice (both "
                                      "its shares, or one share twice)")
        for j in named:
            if j not in self._held:
                raise InconsistentRequest(f"client {self.index}: holds no shares of {j}")
        if any(j not in self._survivors for j in wanted_b):
            raise InconsistentRequest(f"client {self.index}: self-mask share asked of a peer "
                                      "that did not survive")
        if any(j in self._survivors for j in wanted_s):
            raise InconsistentRequest(f"client {self.index}: key share asked of a survivor")
        for j in wanted_b:
            self._reveal(j, SELF_MASK)
        for j in wanted_s:
            self._reveal(j, KEY)
        self.stage = Stage.DONE
        return UnmaskShares.create(
            self._identity, self._header(),
            self_shares=tuple(RevealedShare(j, self._held[j][1]) for j in wanted_b),
            key_shares=tuple(RevealedShare(j, self._held[j][0]) for j in wanted_s))

    def _reveal(self, j: int, kind: str) -> None:
        if self._revealed.get(j, kind) != kind:
            raise InconsistentRequest(f"client {self.index}: already revealed the "
                                      f"{self._revealed[j]} share of {j}")
        self._revealed[j] = kind

    def _header(self) -> Header:
        return Header.of(self._ctx, self.index)

    def _need(self, have: int, what: str) -> None:
        t = self.config.params.t
        if have < t:
            self._aborted = f"{have} {what}, threshold {t}"
            log.info("client %d aborts round %d: %s", self.index, self.config.round,
                     self._aborted)
            raise RoundAborted(f"client {self.index}: only {self._aborted}")

    def _expect(self, stage: Stage) -> None:
        if self._aborted is not None:
            raise RoundAborted(f"client {self.index}: round already aborted ({self._aborted})")
        if self.stage != stage:
            raise ReplayedMessage(f"client {self.index}: a {stage.name} message while at "
                                  f"{self.stage.name}")

    def _check_round(self, h: Header) -> None:
        if (h.federation, h.round, h.config) != (self._ctx.federation, self._ctx.round,
                                                 self._ctx.config):
            raise WrongRound(f"client {self.index}: message of {h.federation!r} round {h.round}"
                             f", this is {self._ctx.federation!r} round {self._ctx.round}")

    def _accept(self, msg: Message) -> None:
        self._check_round(msg.header)
        if msg.header.sender != SERVER or not msg.verify(self.config.server):
            raise ForgedMessage(f"client {self.index}: {type(msg).__name__} is not signed by "
                                "the aggregator")
        self._expect(msg.STAGE)
        recipient = getattr(msg, "recipient", self.index)
        if recipient != self.index:
            raise ReplayedMessage(f"client {self.index}: {type(msg).__name__} addressed to "
                                  f"client {recipient}")
