"""The Merkle tree that lets one signature cover a client's k bundles (`merkle.py`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genofed.protocol.secagg import merkle


def _leaves(count: int) -> list[bytes]:
    return [merkle.leaf(i, bytes([i % 256]) * 80) for i in range(count)]


@pytest.mark.parametrize("count", [*range(1, 18), 31, 32, 33, 96, 414])
def test_every_path_leads_to_the_root_and_nothing_else_does(count: int) -> None:
    leaves = _leaves(count)
    top, paths = merkle.root(leaves), merkle.paths(leaves)
    for i, (lf, path) in enumerate(zip(leaves, paths, strict=True)):
        assert len(path) == merkle.path_length(i, count) <= (count - 1).bit_length()
        assert merkle.root_from_path(lf, i, count, path) == top
        assert merkle.root_from_path(merkle.leaf(i + 1, b"x"), i, count, path) != top
        if count > 1:
            assert merkle.root_from_path(lf, (i + 1) % count, count, path) != top
            broken = (bytes(32), *path[1:])
            assert merkle.root_from_path(lf, i, count, broken) != top
            assert merkle.root_from_path(lf, i, count, path[:-1]) is None
    assert merkle.root_from_path(leaves[0], count, count, paths[0]) is None


@given(st.integers(2, 300), st.data())
def test_a_tree_of_other_leaves_has_another_root(count: int, data: st.DataObject) -> None:
    leaves = _leaves(count)
    i = data.draw(st.integers(0, count - 1))
    changed = [*leaves[:i], merkle.leaf(10**6, b"y"), *leaves[i + 1:]]
    assert merkle.root(changed) != merkle.root(leaves)
    assert merkle.root(leaves[:-1]) != merkle.root(leaves)

