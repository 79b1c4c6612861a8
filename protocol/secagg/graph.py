"""The neighbour graph: a Harary graph H(k, n) over a seeded random permutation of the clients.

Clients sit on a ring in the order of a permutation drawn by Fisher-Yates from a ChaCha20
stream (`randombytes_deterministic`, unbiased by rejection), so every device computes the same
graph without numpy's generator algorithms entering the protocol. Each client's neighbours are
the k/2 nearest on either side; k = n - 1 is the complete graph of classic SecAgg.
"""

from __future__ import annotations

import nacl.utils
import numpy as np

from genofed.protocol.secagg.errors import ParameterError
from genofed.protocol.secagg.keys import MaskSeed


def permutation(n: int, key: MaskSeed) -> list[int]:
    """A uniform permutation of range(n) determined by `key`."""
    words, used, size = np.empty(0, dtype="<u4"), 0, 2 * n + 64
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 32) - (1 << 32) % bound  # accept draws below a multiple of bound
        while True:
            if used == words.size:
                words = np.frombuffer(nacl.utils.randombytes_deterministic(4 * size, key.raw),
                                      dtype="<u4")
                size *= 2
            w = int(words[used])
            used += 1
            if w < limit:
                break
        j = w % bound
        order[i], order[j] = order[j], order[i]
    return order


class NeighbourGraph:
    """Who holds whose shares and masks with whom: a permuted Harary graph of degree k."""

    def __init__(self, n: int, k: int, key: MaskSeed) -> None:
        if not 2 <= k <= n - 1 or (k % 2 and k != n - 1):
            raise ParameterError(f"no Harary graph of degree {k} on {n} clients")
        self.n, self.k = n, k
        self._order = permutation(n, key)  # ring position -> client
        self._position = {c: p for p, c in enumerate(self._order)}
        self._cache: dict[int, frozenset[int]] = {}

    def neighbours(self, client: int) -> frozenset[int]:
        """The k clients that hold `client`'s shares and share a mask with it."""
        if not 0 <= client < self.n:
            raise ParameterError(f"client index {client} is outside 0..{self.n - 1}")
        found = self._cache.get(client)
        if found is None:
            if self.k == self.n - 1:
                found = frozenset(range(self.n)) - {client}
            else:
                p, half = self._position[client], self.k // 2
                found = frozenset(self._order[(p + d) % self.n]
                                  for d in range(-half, half + 1) if d)
            self._cache[client] = found
        return found
