"""What the running agent tells its owner: `state_dir/status.json`, and the service manager's
STATUS= line. `genofed agent status` reads the file (it never talks to the daemon), so it
works while the daemon runs, after it stopped, and from another user with read access.

Privacy line: the epsilon this device has spent, from its own ledger (`ledger.py`), in total
and per study; before it joins any round with differential privacy, the line says that only
secure aggregation protects what it sent (the aggregator learns the sum of the round's
updates), rather than a number.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from genofed.agent.notify import Notifier

PRIVACY = ("no round with differential privacy joined: secure aggregation only, so no "
           "epsilon spent")


def privacy_line(state_dir: Path) -> str:
    """The ledger's line, PRIVACY if it has no entry, or why it cannot be read."""
    from genofed.agent import ledger  # the ledger reads the audit chain; status stays light
    from genofed.errors import LocalInputError

    try:
        return ledger.describe(state_dir) or PRIVACY
    except LocalInputError as exc:
        return f"privacy ledger unreadable: {exc}"


def epsilon_vs_caps(state_dir: Path, epsilon_cap: float | None,
                    study_epsilon_cap: float | None) -> dict[str, Any]:
    """The epsilon spent against the owner's caps, per unit (a device's and a record's never
    add up): in total, and in the study that spent the most (the per-study cap binds there).
    `text` is the status line; `error` says why the ledger could not be read."""
    from genofed.agent import ledger
    from genofed.errors import LocalInputError

    doc: dict[str, Any] = {"cap": epsilon_cap, "study_cap": study_epsilon_cap, "units": {}}
    caps = f"{_cap(epsilon_cap)} in total, {_cap(study_epsilon_cap)} per study"
    try:
        have = ledger.spent(state_dir)
    except LocalInputError as exc:
        return {**doc, "error": str(exc), "text": f"ledger unreadable ({caps})"}
    if not have.rounds or have.delta is None:
        return {**doc, "delta": None, "text": f"none spent ({caps})"}
    parts = []
    for unit in sorted(have.total):
        total = have.epsilon(have.delta, unit=unit)
        studies = {s: have.epsilon(have.delta, s, unit) for u, s in have.by_study if u == unit}
        study, most = max(studies.items(), key=lambda kv: kv[1])
        doc["units"][unit] = {"total": total, "by_study": studies}
        parts.append(f"{unit}: {total:.3g} of {_cap(epsilon_cap, total)} in total, "
                     f"{most:.3g} of {_cap(study_epsilon_cap, most)} in study "
                     f"{study or '(unnamed)'}")
    doc["delta"] = have.delta
    return {**doc, "text": "; ".join(parts) + f" (delta {have.delta:g})"}


def _cap(cap: float | None, spent: float | None = None) -> str:
    if cap is None:
        return "no cap"
    share = f" ({spent / cap:.0%})" if spent is not None and cap > 0 else ""
    return f"cap {cap:g}{share}"


def status_path(state_dir: Path) -> Path:
    return state_dir / "status.json"


class StatusBoard:
    """The daemon's view of itself, written whenever it changes."""

    def __init__(self, state_dir: Path, device: str, notifier: Notifier | None = None) -> None:
        self.path = status_path(state_dir)
        self.notifier = notifier or Notifier({})
        self.doc: dict[str, Any] = {
            "device": device, "pid": os.getpid(), "state": "starting", "connected": False,
            "model_version": None, "current_round": None, "last_round": None,
            "consent": None, "privacy": PRIVACY, "last_error": None, "updated": None}

    def update(self, **fields: Any) -> None:
        if all(self.doc.get(k) == v for k, v in fields.items()):
            return
        self.doc.update(fields, updated=round(time.time(), 3))
        # A full disk must not stop a round; the journal still has the logs. No fsync: the
        # file is a view, rewritten often (an SD card's wear), and a crash loses only that.
        with contextlib.suppress(OSError):
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
            tmp.chmod(0o600)
            os.replace(tmp, self.path)
        self.notifier.status(line(self.doc))


def line(doc: dict[str, Any]) -> str:
    """One line for `systemctl status`."""
    parts = [str(doc.get("state"))]
    if doc.get("model_version") is not None:
        parts.append(f"model v{doc['model_version']}")
    last = doc.get("last_round")
    if last:
        parts.append(f"last round {last.get('round')} {last.get('outcome')}")
    return "; ".join(parts)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(status_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def running(doc: dict[str, Any]) -> bool:
    """Is the process that wrote `doc` still alive (and not stopped)?"""
    pid = doc.get("pid")
    if not isinstance(pid, int) or doc.get("state") in ("stopped", "offline"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
