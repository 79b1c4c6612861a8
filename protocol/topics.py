"""The MQTT topic layout, one place for both sides (docs/ARCHITECTURE.md lists who writes what)."""

from __future__ import annotations

import re

from genofed.errors import LocalInputError

PREFIX = "genofed/v1"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Identities that are never devices (the broker's ACL treats every other identity as one).
AGGREGATOR, ADMIN = "aggregator", "admin"
RESERVED_IDS = (AGGREGATOR, ADMIN, "server")


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a safe topic level (no '/', '+', '#'), else raise LocalInputError."""
    if not _NAME.match(value):
        raise LocalInputError(f"{kind} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return value


class Topics:
    """Topic names of one federation."""

    def __init__(self, federation: str) -> None:
        self.federation = check_name("federation", federation)
        self.base = f"{PREFIX}/{federation}"

    @property
    def task(self) -> str:
        return f"{self.base}/server/task"

    @property
    def model(self) -> str:
        return f"{self.base}/server/model"

    @property
    def all_outboxes(self) -> str:
        return f"{self.base}/device/+/outbox"

    @property
    def all_status(self) -> str:
        return f"{self.base}/device/+/status"

    def outbox(self, device: str) -> str:
        return f"{self.base}/device/{check_name('device id', device)}/outbox"

    def inbox(self, device: str) -> str:
        return f"{self.base}/device/{check_name('device id', device)}/inbox"

    def status(self, device: str) -> str:
        return f"{self.base}/device/{check_name('device id', device)}/status"

    def device_of(self, topic: str) -> str | None:
        """The device id in a `device/<id>/...` topic of this federation, else None."""
        head = f"{self.base}/device/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head):].split("/")
        ok = len(rest) == 2 and _NAME.match(rest[0]) and rest[0] not in RESERVED_IDS
        return rest[0] if ok else None
