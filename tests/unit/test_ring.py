"""The ring Z_(2^b): its width and word dtype, the checks of a ring vector, wrap and unwrap
against Python integers, sums mod 2^b, and one error class, a LocalInputError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genofed.errors import LocalInputError
from genofed.protocol.ring import MAX_BITS, Ring, RingError

FAST = settings(deadline=None, max_examples=60)
widths = st.integers(1, MAX_BITS)


@pytest.mark.parametrize("bits, word", [
    (1, "<u1"), (7, "<u1"), (8, "<u1"), (9, "<u2"), (16, "<u2"), (17, "<u4"), (31, "<u4"),
    (32, "<u4"), (33, "<u8"), (63, "<u8"), (64, "<u8"),
])
def test_word_is_the_smallest_little_endian_width(bits: int, word: str) -> None:
    ring = Ring(bits)
    assert ring.word == np.dtype(word) and ring.word.byteorder in "<|="
    assert ring.mask == 2**bits - 1
    assert ring.fills_word == (bits in (8, 16, 32, 64))
    assert ring.zeros(3).dtype == ring.word and not ring.zeros(3).any()


@pytest.mark.parametrize("bits, needle", [
    (0, "bits must be in [1, 64], got 0"), (65, "bits must be in [1, 64], got 65"),
    (-3, "got -3"), (True, "bits must be an integer, got True"), (12.0, "got 12.0"),
    ("12", "got '12'"),
])
def test_bad_widths_are_refused_by_name(bits: object, needle: str) -> None:
    with pytest.raises(RingError) as info:
        Ring(bits)  # type: ignore[arg-type]
    assert needle in str(info.value) and isinstance(info.value, LocalInputError)


def test_numpy_integer_widths_are_plain_ints() -> None:
    ring = Ring(np.int64(20))  # type: ignore[arg-type]
    assert type(ring.bits) is int and ring == Ring(20) and hash(ring) == hash(Ring(20))


def test_check_converts_to_the_word_and_copies_only_then() -> None:
    ring = Ring(12)
    words = np.array([0, 1, 200], dtype=np.uint16)
    assert ring.check(words) is words
    for other in (np.uint8, np.uint32, np.uint64, ">u2"):
        v = ring.check(words.astype(other))
        assert v.dtype == ring.word and v.tolist() == [0, 1, 200]
    with pytest.raises(RingError, match="1-D unsigned integer array, got int64"):
        ring.check([0, 5])  # a list of ints is signed: say what the values are


@pytest.mark.parametrize("values, needle", [
    (np.array([1, 4096], dtype=np.uint64), "input holds 4096, not below 2^12"),
    (np.array([1, 2**64 - 1], dtype=np.uint64), "not below 2^12"),
    (np.array([1, -1], dtype=np.int16), "1-D unsigned integer array, got int16(2,)"),
    (np.array([0.0, 1.0]), "got float64"),
    (np.zeros((2, 2), dtype=np.uint16), "got uint16(2, 2)"),
    (np.uint16(3), "got uint16()"),
])
def test_check_refuses_what_is_not_a_ring_vector(values: np.ndarray, needle: str) -> None:
    with pytest.raises(RingError) as info:
        Ring(12).check(values, "input")
    assert needle in str(info.value)


def test_every_word_is_in_a_ring_that_fills_it() -> None:
    for bits in (8, 16, 32, 64):
        ring = Ring(bits)
        top = np.array([0, ring.mask], dtype=ring.word)
        assert ring.check(top) is top


@FAST
@given(st.data(), widths)
def test_wrap_and_unwrap_are_twos_complement(data: st.DataObject, bits: int) -> None:
    half = 1 << (bits - 1)
    values = data.draw(st.lists(st.integers(-half, half - 1), max_size=40))
    ring = Ring(bits)
    wrapped = ring.wrap(np.array(values, dtype=np.int64))
    assert wrapped.dtype == ring.word
    assert wrapped.tolist() == [v % (1 << bits) for v in values]
    assert ring.unwrap(wrapped).tolist() == values
    if bits < MAX_BITS:
        for bad in (half, -half - 1):
            with pytest.raises(RingError, match=f"value {bad} does not fit in {bits} signed"):
                ring.wrap(np.array([0, bad], dtype=np.int64))


def test_wrap_refuses_a_matrix() -> None:
    with pytest.raises(RingError, match="1-D"):
        Ring(8).wrap(np.zeros((2, 2), dtype=np.int64))


@FAST
@given(st.data(), widths, st.integers(1, 6), st.integers(0, 20))
def test_sum_is_mod_2_to_the_b(data: st.DataObject, bits: int, count: int, length: int) -> None:
    ring = Ring(bits)
    vectors = [data.draw(st.lists(st.integers(0, ring.mask), min_size=length,
                                  max_size=length)) for _ in range(count)]
    dtypes = [ring.word, np.dtype(np.uint64)]
    arrays = [np.array(v, dtype=dtypes[i % 2]) for i, v in enumerate(vectors)]
    total = ring.sum(arrays)
    assert total.dtype == ring.word
    assert total.tolist() == [sum(col) % (1 << bits) for col in zip(*vectors, strict=True)]
    assert all(np.array_equal(a, v) for a, v in zip(arrays, vectors, strict=True))  # untouched


def test_sum_refuses_no_vectors_and_unequal_lengths() -> None:
    ring = Ring(20)
    with pytest.raises(RingError, match="at least one vector"):
        ring.sum([])
    with pytest.raises(RingError, match="vector 1 has shape \\(3,\\), the others \\(2,\\)"):
        ring.sum([ring.zeros(2), ring.zeros(3)])
    with pytest.raises(RingError, match="vector 1 holds 1048576"):
        ring.sum([ring.zeros(2), np.array([0, 1 << 20], dtype=np.uint32)])


def test_reduce_is_in_place() -> None:
    ring = Ring(12)
    words = np.array([4096, 4097, 65535], dtype=np.uint16)
    assert ring.reduce(words) is words and words.tolist() == [0, 1, 4095]
