"""systemd's notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

The protocol is one datagram of newline-separated KEY=VALUE lines sent to the AF_UNIX socket
named by $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'). It is these
few lines rather than a dependency: the maintained libraries are either bindings to
libsystemd (`systemd-python`, which needs libsystemd headers to build on the device) or
equally small pure-Python copies, and the device profile stays at four packages. Without
$NOTIFY_SOCKET (not under systemd, or not Type=notify) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def socket_address(name: str) -> str | bytes:
    """The address $NOTIFY_SOCKET names: '@x' is the abstract name x (a leading NUL byte)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """Sends notifications to the service manager, and watchdog pings at most as often as
    `$WATCHDOG_USEC` asks for (half its period, as sd_watchdog_enabled(3) recommends)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self.address = socket_address(env["NOTIFY_SOCKET"]) if env.get("NOTIFY_SOCKET") \
            else None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = float("-inf")
        self._status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """One datagram of FIELD=value lines (keys upper-cased); False if it could not go."""
        if self.address is None:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:
                s.connect(self.address)
                s.sendall(msg)
            except OSError as exc:  # the manager went away: nothing to tell it
                log.debug("sd_notify to %r failed: %s", self.address, exc)
                return False
        return True

    def ready(self, status: str) -> None:
        self._status = status
        self.send(ready="1", status=status)

    def status(self, status: str) -> None:
        """STATUS= text (what `systemctl status` shows); sent only when it changes."""
        if status != self._status:
            self._status = status
            self.send(status=status)

    def stopping(self, status: str) -> None:
        self.send(stopping="1", status=status)

    def ping(self) -> None:
        """WATCHDOG=1 if half the watchdog period has passed since the last one."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_s:
            self._last_ping = now
            self.send(watchdog="1")
