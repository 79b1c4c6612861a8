"""A Merkle tree over a client's sealed bundles: one signature for all k of them.

A client seals one bundle to each of its k neighbours and signs them so that a recipient can
prove to the aggregator what its sender sent it (`blame.py`). Signing each bundle costs 64
bytes a bundle on the client's upload (6 KB at k = 96, more than the bundles' shares) and one
Ed25519 verification a bundle at the aggregator (n k of them a round: two thirds of its CPU
at n = 300). Instead the client signs its EncryptedShares once, over the root of a Merkle
tree whose leaves are its (recipient, ciphertext) pairs in recipient order; the aggregator
checks that one signature, and relays to each recipient its bundle with the sender's
signature and the leaf's path to the root (ceil(log2 k) hashes), which the recipient checks
only when the bundle does not open and it is about to accuse (RFC 6962's tree shape: an
unpaired node moves up a level unchanged, so no leaf is ever duplicated).

Leaves and inner nodes are hashed in separate domains (BLAKE2b-256, personalisations
"genofed-leaf" and "genofed-node"), so no inner node is ever taken for a leaf (the second
preimage attack on trees that hash both alike).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from genofed.protocol.secagg.encoding import Writer

HASH_BYTES = 32
MAX_DEPTH = 32  # at most 2^32 leaves: u32 positions


def _h(data: bytes, person: bytes) -> bytes:
    # hashlib's BLAKE2b: the same function as libsodium's with this personalisation, without
    # PyNaCl's per-call checks (n k leaves a round at the aggregator: ~17 us a call saved)
    return hashlib.blake2b(data, digest_size=HASH_BYTES, person=person).digest()


def leaf(peer: int, ciphertext: bytes) -> bytes:
    """The hash of one bundle: its recipient and its ciphertext."""
    return _h(Writer().u32(peer).blob(ciphertext).getvalue(), b"genofed-leaf")


def _node(left: bytes, right: bytes) -> bytes:
    return _h(left + right, b"genofed-node")


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root last (one node)."""
    if not leaves:
        return [[_h(b"", b"genofed-empty")]]
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([_node(below[i], below[i + 1]) if i + 1 < len(below) else below[i]
                       for i in range(0, len(below), 2)])
    return levels


def root(leaves: Sequence[bytes]) -> bytes:
    """The root over `leaves` in order (a fixed hash for none)."""
    return _levels(leaves)[-1][0]


def paths(leaves: Sequence[bytes]) -> list[tuple[bytes, ...]]:
    """For each leaf, the sibling hashes from it up to the root (levels without a sibling
    are skipped: the unpaired node moves up unchanged)."""
    levels = _levels(leaves)
    out: list[tuple[bytes, ...]] = []
    for index in range(len(leaves)):
        path, pos = [], index
        for level in levels[:-1]:
            sibling = pos ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            pos //= 2
        out.append(tuple(path))
    return out


def path_length(index: int, count: int) -> int:
    """How many sibling hashes the path of leaf `index` of `count` holds."""
    n, pos, length = count, index, 0
    while n > 1:
        if pos ^ 1 < n:
            length += 1
        pos, n = pos // 2, (n + 1) // 2
    return length


def root_from_path(leaf_hash: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes | None:
    """The root that leaf `index` of `count` with `path` leads to; None if the path does not
    fit the tree's shape (wrong length, or an index outside the tree)."""
    if not 0 <= index < count or len(path) != path_length(index, count):
        return None
    node, n, pos, it = leaf_hash, count, index, iter(path)
    while n > 1:
        if pos ^ 1 < n:
            sibling = next(it)
            node = _node(node, sibling) if pos % 2 == 0 else _node(sibling, node)
        pos, n = pos // 2, (n + 1) // 2
    return node
