"""One round's configuration, fixed and signed by the coordinator before the round starts.

Everything both sides must agree on: federation, round, the roster of enrolled identities (a
client's index in it is its id in every message and x = index + 1 its Shamir coordinate), the
aggregator's identity, (n, k, t), the ring, the vector length and the graph seed. Its BLAKE2b
digest is bound into every signature and every derived seed, so two parties holding different
configurations cannot complete a round together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import nacl.encoding
import nacl.hash

from genofed.protocol.ring import Ring
from genofed.protocol.secagg.encoding import Writer
from genofed.protocol.secagg.errors import ParameterError
from genofed.protocol.secagg.graph import NeighbourGraph
from genofed.protocol.secagg.keys import Digest, GraphSeed, IdentityKey
from genofed.protocol.secagg.params import SecAggParams
from genofed.protocol.secagg.prg import RoundContext, graph_stream_key

MAX_LENGTH = 1 << 28


@dataclass(frozen=True)
class Participant:
    """An enrolled device in a round's roster."""

    device: str
    identity: IdentityKey


@dataclass(frozen=True)
class RoundConfig:
    """What every participant of one round agrees on before it starts."""

    federation: str
    round: int
    roster: tuple[Participant, ...]
    server: IdentityKey
    params: SecAggParams
    ring: Ring
    length: int
    graph_seed: GraphSeed

    def __post_init__(self) -> None:
        if not self.federation or len(self.federation.encode()) > 64:
            raise ParameterError(f"federation name must be 1-64 bytes, got {self.federation!r}")
        if not isinstance(self.round, int) or not 0 <= self.round < 1 << 63:
            raise ParameterError(f"round must be a non-negative integer, got {self.round!r}")
        if len(self.roster) != self.params.n:
            raise ParameterError(f"roster of {len(self.roster)} for n={self.params.n}")
        if len({p.device for p in self.roster}) != len(self.roster):
            raise ParameterError("roster names a device twice")
        keys = {p.identity for p in self.roster} | {self.server}
        if len(keys) != len(self.roster) + 1:
            raise ParameterError("roster (or the aggregator) repeats an identity key")
        if not isinstance(self.length, int) or not 1 <= self.length <= MAX_LENGTH:
            raise ParameterError(f"vector length must be in 1..{MAX_LENGTH}, got {self.length!r}")

    @property
    def n(self) -> int:
        """Number of clients in the roster."""
        return self.params.n

    @cached_property
    def digest(self) -> Digest:
        """BLAKE2b-256 of the canonical encoding."""
        w = Writer().text(self.federation).u64(self.round).u32(self.n)
        for p in self.roster:
            w.text(p.device).fixed(p.identity.raw)
        w.fixed(self.server.raw).u32(self.params.k).u32(self.params.t).u8(self.ring.bits)
        w.u64(self.length).fixed(self.graph_seed.raw)
        return Digest(nacl.hash.blake2b(w.getvalue(), digest_size=32, person=b"genofed-config",
                                        encoder=nacl.encoding.RawEncoder))

    @cached_property
    def context(self) -> RoundContext:
        """What signatures and seeds of this round are bound to."""
        return RoundContext(self.federation, self.round, self.digest)

    @cached_property
    def graph(self) -> NeighbourGraph:
        """The round's neighbour graph."""
        return NeighbourGraph(self.n, self.params.k, graph_stream_key(self.graph_seed,
                                                                      self.context))
