"""sd_notify against a real AF_UNIX datagram socket, as systemd listens on $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from genofed.agent.notify import Notifier, socket_address


def _listen(address: str | bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    name = str(tmp_path / "notify")
    with _listen(name) as s:
        yield name, s


def test_ready_status_watchdog_on_a_path_socket(path_socket: tuple[str, socket.socket]) -> None:
    name, s = path_socket
    n = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"})
    n.ready("waiting for the broker")
    assert s.recv(4096) == b"READY=1\nSTATUS=waiting for the broker"
    n.status("in round 3")
    assert s.recv(4096) == b"STATUS=in round 3"
    n.status("in round 3")  # unchanged: not sent again
    n.ping()
    assert s.recv(4096) == b"WATCHDOG=1"
    n.ping()  # within half the period: not sent
    n.stopping("stopped")
    assert s.recv(4096) == b"STOPPING=1\nSTATUS=stopped"


def test_abstract_socket_name() -> None:
    name = f"@genofed-test-{os.getpid()}"
    assert socket_address(name) == b"\0" + name[1:].encode()
    with _listen(socket_address(name)) as s:
        Notifier({"NOTIFY_SOCKET": name}).ready("up")
        assert s.recv(4096) == b"READY=1\nSTATUS=up"


def test_without_a_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier({}).send(ready="1")
    # A socket that went away (the manager restarted): a quiet False, never an exception.
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).send(ready="1")


def test_watchdog_only_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_s == 2.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "4000000",
                     "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 2.0
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None
