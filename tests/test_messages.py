"""The envelope: round trips, and every malformed payload refused with a reason."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genofed.protocol import messages as m


def _update(**kw: object) -> m.Update:
    base = dict(federation="f", round=3, device="dev01", n_examples=10, mean_loss=0.5,
                bytes_down=100, delta=np.arange(5, dtype=np.float32))
    base.update(kw)
    return m.Update(**base)  # type: ignore[arg-type]


@given(st.lists(st.floats(-1e6, 1e6, width=32), max_size=200), st.integers(0, 10**6))
def test_update_round_trip(values: list[float], rnd: int) -> None:
    u = _update(delta=np.array(values, dtype=np.float32), round=rnd)
    back = m.decode(m.encode(u), m.Update)
    assert back.round == rnd and back.device == "dev01" and back.n_examples == 10
    np.testing.assert_array_equal(back.delta, u.delta)


def test_task_and_model_round_trip() -> None:
    t = m.Task(federation="f", round=2, state="open", model_version=1, local_epochs=3,
               batch_size=16, lr=0.05)
    assert m.decode(m.encode(t), m.Task) == t
    g = m.GlobalModel(federation="f", version=4, panel_sha256="ab" * 32,
                      weights=np.ones(7, dtype=np.float32))
    back = m.decode(m.encode(g), m.GlobalModel)
    assert back.version == 4 and back.panel_sha256 == g.panel_sha256
    np.testing.assert_array_equal(back.weights, g.weights)


@pytest.mark.parametrize("payload, reason", [
    (b"", "bad magic"),
    (b"hello world, not ours", "bad magic"),
    (m.MAGIC + (10**6).to_bytes(4, "big") + b"{}", "out of bounds"),
    (m.MAGIC + (4).to_bytes(4, "big") + b"\xff\xfe{}", "not JSON"),
    (m.MAGIC + (2).to_bytes(4, "big") + b"[]", "expected a 'update'"),
])
def test_garbage_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(m.MessageError, match=reason):
        m.decode(payload, m.Update)


def test_wrong_type_truncated_body_and_size_limit() -> None:
    raw = m.encode(_update())
    with pytest.raises(m.MessageError, match="expected a 'task'"):
        m.decode(raw, m.Task)
    with pytest.raises(m.MessageError, match="does not hold"):
        m.decode(raw[:-3], m.Update)
    with pytest.raises(m.MessageError, match="exceeds the limit"):
        m.decode(raw, m.Update, max_bytes=len(raw) - 1)


def test_bad_fields_are_refused() -> None:
    nan = _update(delta=np.array([1.0, np.nan], dtype=np.float32))
    with pytest.raises(m.MessageError, match="non-finite"):
        m.decode(m.encode(nan), m.Update)
    with pytest.raises(m.MessageError, match="n_examples"):
        _update(n_examples=0)
    with pytest.raises(m.MessageError, match="state"):
        m.Task(federation="f", round=0, state="bogus", model_version=0)
    with pytest.raises(m.MessageError, match="round"):
        m.decode(_craft({"round": -1}), m.Task)
    with pytest.raises(m.MessageError, match="bad task fields"):
        m.decode(_craft({"evil": 1}), m.Task)
    with pytest.raises(m.MessageError, match="bad task fields"):
        m.decode(_craft({"lr": "fast"}), m.Task)


def _craft(changes: dict[str, object]) -> bytes:
    """A task payload with header fields changed by hand, as an attacker would."""
    header = {"type": "task", "federation": "f", "round": 0, "state": "open",
              "model_version": 0, **changes}
    raw = json.dumps(header).encode()
    return m.MAGIC + len(raw).to_bytes(4, "big") + raw


def test_device_of_topic() -> None:
    from genofed.protocol.topics import Topics

    t = Topics("f")
    assert t.device_of(t.outbox("dev01")) == "dev01"
    assert t.device_of(f"{t.base}/device/aggregator/outbox") is None  # reserved identity
    assert t.device_of(f"{t.base}/device/dev01/outbox/extra") is None
    assert t.device_of("genofed/v1/other/device/dev01/outbox") is None
