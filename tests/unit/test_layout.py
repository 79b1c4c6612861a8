"""The flat parameter layout: round trips, the pruning mask, INT8 channels, size errors.

The oracle for quantization is `models/quant.py`'s per-tensor rule applied tensor by tensor to
slices the test cuts itself; the layout must give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from genofed.errors import LocalInputError
from genofed.models.layout import ParamLayout
from genofed.models.manifest import Bundle, ParamSpec, load_bundle
from genofed.models.quant import QuantizedTensor, dequantize, quantize

# every finite float32, zeros and subnormals included
FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)
SCALES = st.floats(0, 2.0**100, width=32)


@st.composite
def layouts(draw: st.DrawFn) -> ParamLayout:
    """1-4 tensors of 1-3 axes, and a random pruning mask over them."""
    shapes = draw(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
                           min_size=1, max_size=4))
    specs = tuple(ParamSpec(f"p{i}", f"m.p{i}", s) for i, s in enumerate(shapes))
    n = sum(int(np.prod(s)) for s in shapes)
    return ParamLayout(specs, draw(arrays(np.bool_, n)))


@st.composite
def layout_and_vector(draw: st.DrawFn) -> tuple[ParamLayout, np.ndarray]:
    layout = draw(layouts())
    return layout, draw(arrays(np.float32, layout.n_params, elements=FLOATS))


def _runs(layout: ParamLayout) -> list[tuple[ParamSpec, int, int]]:
    """(spec, first coordinate, first channel) of each tensor, counted here, not taken from
    the layout."""
    out, offset, channel = [], 0, 0
    for p in layout.specs:
        out.append((p, offset, channel))
        offset += int(np.prod(p.shape))
        channel += p.shape[0]
    return out


@settings(max_examples=80, deadline=None)
@given(layout_and_vector())
def test_flatten_and_unflatten_round_trip(case: tuple[ParamLayout, np.ndarray]) -> None:
    layout, vec = case
    named = layout.unflatten(vec)
    assert list(named) == [p.name for p in layout.specs]
    for p, offset, _ in _runs(layout):
        assert named[p.name].shape == p.shape and named[p.name].dtype == np.float32
        assert named[p.name].tobytes() == vec[offset:offset + p.size].tobytes()
    flat = layout.flatten(named)
    assert flat.dtype == np.float32 and flat.tobytes() == vec.tobytes()
    named[layout.specs[0].name].flat[0] = 7.0  # copies: the vector is untouched
    assert layout.flatten(layout.unflatten(vec)).tobytes() == vec.tobytes()


@settings(max_examples=80, deadline=None)
@given(layout_and_vector(), st.sampled_from([np.float32, np.float64]))
def test_trained_and_expand_round_trip_with_pruned_coordinates_exactly_zero(
        case: tuple[ParamLayout, np.ndarray], dtype: type) -> None:
    layout, vec32 = case
    vec = vec32.astype(dtype)
    packed = layout.trained(vec)
    assert packed.shape == (layout.n_trained,) == (int(layout.keep.sum()),)
    assert packed.dtype == dtype
    assert packed.tolist() == [v for v, k in zip(vec.tolist(), layout.keep, strict=True) if k]
    full = layout.expand(packed)
    assert full.dtype == dtype and full.shape == (layout.n_params,)
    assert np.array_equal(full[layout.keep], vec[layout.keep])
    pruned = full[~layout.keep]
    assert np.all(pruned == 0) and not np.signbit(pruned).any()  # +0.0, exactly
    assert layout.trained(full).tobytes() == packed.tobytes()


@settings(max_examples=150, deadline=None)
@given(layout_and_vector())
def test_quantize_gives_the_bytes_of_the_per_tensor_rule(
        case: tuple[ParamLayout, np.ndarray]) -> None:
    layout, vec = case
    want = [quantize(vec[o:o + p.size].reshape(p.shape)) for p, o, _ in _runs(layout)]
    values, scales = layout.quantize(vec)
    assert values.dtype == np.int8 and scales.dtype == np.float32
    assert values.tobytes() == b"".join(t.q.tobytes() for t in want)
    assert scales.tobytes() == b"".join(t.scale.tobytes() for t in want)
    assert scales.shape == (layout.n_channels,) == (sum(p.shape[0] for p in layout.specs),)
    back = layout.dequantize(values, scales)
    assert back.tobytes() == b"".join(dequantize(t).tobytes() for t in want)
    assert np.all(back[vec == 0] == 0)  # pruned (zero) weights travel as exact zeros


@settings(max_examples=80, deadline=None)
@given(layouts().flatmap(lambda lay: st.tuples(
    st.just(lay), arrays(np.int8, lay.n_params),
    arrays(np.float32, lay.n_channels, elements=SCALES))))
def test_dequantize_gives_the_bytes_of_the_per_tensor_rule(
        case: tuple[ParamLayout, np.ndarray, np.ndarray]) -> None:
    layout, values, scales = case
    want = b"".join(dequantize(QuantizedTensor(values[o:o + p.size].reshape(p.shape),
                                               scales[c:c + p.shape[0]])).tobytes()
                    for p, o, c in _runs(layout))
    assert layout.dequantize(values, scales).tobytes() == want


def test_mask_of_named_arrays_and_packing_by_hand() -> None:
    specs = (ParamSpec("w", "w", (2, 3)), ParamSpec("b", "b", (2,)))
    layout = ParamLayout.of(specs, {"w": np.array([[1, 0, 1], [0, 0, 1]], np.float32),
                                    "b": np.ones(2, np.float32)})
    assert layout.keep.tolist() == [True, False, True, False, False, True, True, True]
    assert (layout.n_params, layout.n_trained, layout.n_channels) == (8, 5, 4)
    assert ParamLayout.of(specs).n_trained == 8  # no mask: nothing pruned
    assert [layout.name_at(i) for i in (0, 5, 6, 7)] == ["w", "w", "b", "b"]
    with pytest.raises(ValueError):
        layout.keep[0] = False  # read-only: the layout is shared


def test_size_and_value_errors_name_what_is_wrong() -> None:
    specs = (ParamSpec("w", "w", (2, 3)), ParamSpec("b", "b", (2,)))
    layout = ParamLayout.of(specs)
    ok = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    with pytest.raises(LocalInputError, match=r"missing \['b'\], unexpected \['c'\]"):
        layout.flatten({"w": ok["w"], "c": ok["b"]})
    with pytest.raises(LocalInputError, match=r"w has shape \[3, 2\], want \[2, 3\]"):
        layout.flatten({**ok, "w": np.zeros((3, 2))})
    for call in (layout.unflatten, layout.trained, layout.quantize, layout.tensors):
        with pytest.raises(LocalInputError, match=r"shape \[7\], want \[8\]"):
            call(np.zeros(7, np.float32))
    with pytest.raises(LocalInputError, match=r"shape \[2, 4\], want \[8\]"):
        layout.unflatten(np.zeros((2, 4), np.float32))
    with pytest.raises(LocalInputError, match=r"shape \[9\], want \[8\] \(one value per "
                                              "trained coordinate"):
        layout.expand(np.zeros(9))
    with pytest.raises(LocalInputError, match="contiguous float32"):
        layout.tensors(np.zeros(8))
    bad = np.zeros(8, np.float32)
    bad[6] = np.inf
    with pytest.raises(LocalInputError, match="b has non-finite values"):
        layout.quantize(bad)
    values, scales = layout.quantize(np.ones(8, np.float32))
    with pytest.raises(LocalInputError, match="7 int8 values and 4 scales, the model wants 8 "
                                              "int8 values and 4 scales"):
        layout.dequantize(values[:-1], scales)
    with pytest.raises(LocalInputError, match="8 int16 values"):
        layout.dequantize(values.astype(np.int16), scales)
    with pytest.raises(LocalInputError, match="and 5 scales"):
        layout.dequantize(values, np.ones(5, np.float32))
    with pytest.raises(LocalInputError, match="finite and non-negative"):
        layout.dequantize(values, -scales)
    with pytest.raises(LocalInputError, match=r"pruning mask is bool\[7\], want bool\[8\]"):
        ParamLayout(specs, np.ones(7, np.bool_))
    with pytest.raises(LocalInputError, match="pruning mask is float32"):
        ParamLayout(specs, np.ones(8, np.float32))
    with pytest.raises(LocalInputError, match="must be 0 or 1"):
        ParamLayout.of(specs, {"w": np.full((2, 3), 0.5), "b": np.ones(2)})
    with pytest.raises(LocalInputError, match="pruning mask do not match the model"):
        ParamLayout.of(specs, {"w": np.ones((2, 3))})


def test_tensors_are_views_of_the_vector() -> None:
    layout = ParamLayout.of((ParamSpec("w", "w", (2, 3)), ParamSpec("b", "b", (2,))))
    vec = np.zeros(8, np.float32)
    views = layout.tensors(vec)
    views["b"][1] = 5.0
    views["w"][1, 0] = 2.0
    assert vec.tolist() == [0, 0, 0, 2, 0, 0, 0, 5]


def test_bundle_layout_reads_the_mask_once(pruned_bundle: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    b = load_bundle(pruned_bundle)  # load_bundle checks the mask through the layout

    def unreadable(self: Bundle) -> dict[str, np.ndarray]:
        raise AssertionError("mask.npz read again")

    monkeypatch.setattr(Bundle, "mask", unreadable)
    layout = b.layout
    assert layout is b.layout and layout.specs == b.params
    assert layout.n_params == b.n_params and 0 < layout.n_trained < layout.n_params
    monkeypatch.undo()
    mask = b.mask()
    assert layout.keep.tolist() == [bool(m) for p in b.params for m in mask[p.name].ravel()]
