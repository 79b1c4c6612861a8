"""The device's status message: what each side writes and what a hostile payload gets."""

from __future__ import annotations

import pytest

from genofed.errors import MessageError
from genofed.protocol.schema import DeviceStatus


def test_status_round_trips_and_empty_reads_offline() -> None:
    for state in DeviceStatus.STATES:
        s = DeviceStatus("dev01", state)
        assert DeviceStatus.decode(s.encode(), "dev01") == s
    assert DeviceStatus.decode(b"", "dev01") == DeviceStatus("dev01", "offline")


@pytest.mark.parametrize(("payload", "why"), [
    (b"[" * 100_000 + b"]" * 100_000, "more than 1024"),  # nesting deep enough to recurse
    (b"[" * 400 + b"]" * 400, "not an object"),
    (b"{\"state\": " * 90 + b"1" + b"}" * 90, "not an object with a state"),
    (b"\xff\xfe", "not JSON"),
    (b'{"device": "dev02", "state": "online"}', "names device 'dev02'"),
    (b'{"device": "dev01", "state": "asleep"}', "not one of"),
    (b'{"device": "dev01"}', "not an object with a state"),
])
def test_bad_status_is_one_message_error(payload: bytes, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        DeviceStatus.decode(payload, "dev01")
