"""One SecAgg+ round's parties built deterministically, for tests that drive rounds in memory:
a roster of identities, the server's, the configuration, and inputs."""

from __future__ import annotations

import dataclasses

import nacl.encoding
import nacl.hash
import nacl.utils
import numpy as np

from genofed.protocol.ring import Ring
from genofed.protocol.secagg import (
    GraphSeed,
    Participant,
    RoundConfig,
    SecAggParams,
    SecAggServer,
    SigningIdentity,
    make_clients,
)
from genofed.protocol.secagg.client import SecAggClient


class Entropy:
    """Deterministic stand-in for nacl.utils.random, so every test is reproducible."""

    def __init__(self, seed: int) -> None:
        self.key, self.calls = nacl.hash.blake2b(seed.to_bytes(8, "big"), digest_size=32,
                                                 encoder=nacl.encoding.RawEncoder), 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        key = nacl.hash.blake2b(self.calls.to_bytes(8, "big"), key=self.key, digest_size=32,
                                encoder=nacl.encoding.RawEncoder)
        return nacl.utils.randombytes_deterministic(size, key)


@dataclasses.dataclass
class Federation:
    config: RoundConfig
    ids: dict[int, SigningIdentity]
    server_id: SigningIdentity
    entropy: Entropy

    def clients(self) -> dict[int, SecAggClient]:
        return make_clients(self.config, self.ids, entropy=self.entropy)

    def server(self) -> SecAggServer:
        return SecAggServer(self.config, self.server_id)

    def with_round(self, rnd: int) -> Federation:
        return dataclasses.replace(self, config=dataclasses.replace(self.config, round=rnd))


def federation(n: int, k: int, t: int, *, bits: int = 32, length: int = 16, seed: int = 0,
               rnd: int = 7) -> Federation:
    e = Entropy(seed)
    ids = {i: SigningIdentity.generate(e) for i in range(n)}
    server_id = SigningIdentity.generate(e)
    config = RoundConfig("fed", rnd, tuple(Participant(f"dev{i}", ids[i].public)
                                           for i in range(n)),
                         server_id.public, SecAggParams(n, k, t), Ring(bits), length,
                         GraphSeed(e(32)))
    return Federation(config, ids, server_id, e)


def inputs_for(f: Federation, seed: int = 1) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, 1 << f.config.ring.bits, f.config.length, dtype=np.uint64)
            for i in range(f.config.n)}


def ring_sum(vectors: list[np.ndarray], bits: int) -> np.ndarray:
    total = [sum(int(v[c]) for v in vectors) % (1 << bits) for c in range(vectors[0].size)]
    return np.array(total, dtype=np.uint64)
