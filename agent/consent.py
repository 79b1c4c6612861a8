"""The owner's consent record and the device's audit log, both in the agent's state folder.

`consent.json` holds the owner's current decision, with the data uses (GA4GH DUO codes) it
covers: a task that declares codes outside them is never joined. Granted (optionally until
an expiry), paused (no new round; a round in flight completes) or withdrawn (the round in
flight is left at once, as a dropout, and no later one joined). Without the file, the
configuration the owner installed stands for consent (with no data use agreed: a task that
declares DUO codes is not joined), and `status` says that no record exists. The record also
holds the owner's privacy caps: the most epsilon this device will spend in total and in any
one study; `agent/ledger.py` checks every round against them before joining.

`audit.jsonl` is append-only and hash-chained: each entry holds the SHA-256 of the one
before, and its own hash covers its content and that link, so an edited, inserted or
removed entry breaks the chain from there on; `audit.head` keeps the last entry's sequence
number and hash, so a truncated tail shows too. It records every consent change and every
contribution (round, task digest, model version, bytes and messages sent and received, the
topic they went to). A chain is evidence against accidents and casual edits, not against
someone who can rewrite the whole folder: that needs a copy elsewhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genofed import atomic
from genofed.errors import LocalInputError
from genofed.protocol.schema import DataUse, check_duo

STATES = ("granted", "paused", "withdrawn")
GENESIS = "0" * 64


@dataclass(frozen=True)
class Consent:
    """The owner's decision. `recorded` False: no consent.json, the configuration stands."""

    state: str = "granted"
    expires: float | None = None  # Unix time; None: no expiry
    changed: float = 0.0
    recorded: bool = False
    duo: tuple[str, ...] = ()  # the data uses (GA4GH DUO codes) the owner agreed to
    epsilon_cap: float | None = None  # the most epsilon spent in total; None: no cap
    study_epsilon_cap: float | None = None  # ... and in any one study

    def refuses(self, use: DataUse) -> str | None:
        """Why a task declaring `use` may not be joined (None: it may). A task that declares
        DUO codes needs every one of them in the owner's consent; one that declares none
        restricts nothing and is joined on the consent alone."""
        missing = [c for c in use.duo if c not in self.duo]
        if not missing:
            return None
        study = f"study {use.study!r} " if use.study else ""
        agreed = ", ".join(self.duo) if self.duo else "none"
        return (f"{study}declares data use {', '.join(use.duo)}; your consent covers "
                f"{agreed} (not {', '.join(missing)})")

    def allows_joining(self, now: float) -> bool:
        """May the device join a new round?"""
        return self.state == "granted" and (self.expires is None or now < self.expires)

    def allows_staying(self) -> bool:
        """May a round already joined go on? Only a withdrawal ends it."""
        return self.state != "withdrawn"

    def describe(self, now: float) -> str:
        if not self.recorded:
            return "granted by the configuration (no consent record)"
        if self.state == "granted" and self.expires is not None and now >= self.expires:
            return f"expired {_iso(self.expires)}"
        until = f" until {_iso(self.expires)}" if self.expires is not None else ""
        uses = f", data use {', '.join(self.duo)}" if self.duo else ""
        caps = "".join(f", {what} epsilon cap {cap:g}" for what, cap in (
            ("total", self.epsilon_cap), ("per-study", self.study_epsilon_cap))
            if cap is not None)
        return f"{self.state}{until}{uses}{caps} (since {_iso(self.changed)})"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def consent_path(state_dir: Path) -> Path:
    return state_dir / "consent.json"


def audit_path(state_dir: Path) -> Path:
    return state_dir / "audit.jsonl"


def read_consent(state_dir: Path) -> Consent:
    """The current record; a damaged one is an error (never taken as consent)."""
    path = consent_path(state_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return Consent()
    except (OSError, ValueError) as exc:
        raise LocalInputError(f"{path}: unreadable consent record: {exc}") from None
    try:
        c = Consent(state=str(doc["state"]), changed=float(doc["changed"]), recorded=True,
                    expires=None if doc.get("expires") is None else float(doc["expires"]),
                    duo=check_duo(list(doc.get("duo", [])), str(path)),
                    epsilon_cap=_cap(doc.get("epsilon_cap"), path),
                    study_epsilon_cap=_cap(doc.get("study_epsilon_cap"), path))
    except (KeyError, TypeError, ValueError):
        raise LocalInputError(f"{path}: not a consent record") from None
    if c.state not in STATES:
        raise LocalInputError(f"{path}: state {c.state!r} is not one of {', '.join(STATES)}")
    return c


def _cap(value: object, where: object) -> float | None:
    """An epsilon cap as recorded: None (no cap) or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not (math.isfinite(value) and value >= 0):
        raise LocalInputError(f"{where}: an epsilon cap must be a number >= 0, got {value!r}")
    return float(value)


def set_consent(state_dir: Path, state: str, *, expires: float | None = None,
                duo: tuple[str, ...] = (), epsilon_cap: float | None = None,
                study_epsilon_cap: float | None = None, now: float | None = None) -> Consent:
    """Record the owner's decision (with the data uses and the privacy caps agreed to) and
    log it in the audit chain."""
    if state not in STATES:
        raise LocalInputError(f"consent must be one of {', '.join(STATES)}, got {state!r}")
    now = time.time() if now is None else now
    if expires is not None and expires <= now:
        raise LocalInputError(f"the expiry {_iso(expires)} is already past")
    c = Consent(state=state, expires=expires, changed=now, recorded=True,
                duo=check_duo(duo, "consent"), epsilon_cap=_cap(epsilon_cap, "consent"),
                study_epsilon_cap=_cap(study_epsilon_cap, "consent"))
    doc = {k: list(v) if k == "duo" else v for k, v in asdict(c).items() if k != "recorded"}
    atomic.write_bytes(consent_path(state_dir), json.dumps(doc).encode() + b"\n", mode=0o600)
    append(state_dir, "consent", {"state": state, "expires": expires, "duo": list(c.duo),
                                  "epsilon_cap": c.epsilon_cap,
                                  "study_epsilon_cap": c.study_epsilon_cap}, now=now)
    return c


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the entry's canonical JSON, its own `hash` left out."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append(state_dir: Path, kind: str, fields: dict[str, Any], *,
           now: float | None = None) -> dict[str, Any]:
    """Append one entry (the daemon and the CLI may both write: a file lock orders them)."""
    path = audit_path(state_dir)
    with _locked(path):
        seq, prev = _head(state_dir)
        entry: dict[str, Any] = {"seq": seq + 1, "at": round(time.time() if now is None
                                                             else now, 3),
                                 "kind": kind, **fields, "prev": prev}
        entry["hash"] = entry_hash(entry)
        atomic.append_line(path, json.dumps(entry, sort_keys=True))
        atomic.write_bytes(path.with_suffix(".head"), f"{seq + 1} {entry['hash']}\n".encode(),
                           mode=0o600)
    os.chmod(path, 0o600)
    return entry


def _head(state_dir: Path) -> tuple[int, str]:
    head = audit_path(state_dir).with_suffix(".head")
    try:
        seq, h = head.read_text().split()
        return int(seq), h
    except FileNotFoundError:
        return 0, GENESIS
    except (OSError, ValueError):
        raise LocalInputError(f"{head}: damaged; check the log with `genofed agent audit`"
                              ) from None


def verify(state_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every entry, and the problems found (empty: the chain holds)."""
    path = audit_path(state_dir)
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    prev, seq = GENESIS, 0
    for n, line in enumerate(lines, 1):
        try:
            e = json.loads(line)
            ok = isinstance(e, dict) and isinstance(e.get("seq"), int)
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{path}:{n}: not an audit entry")
            continue
        if e["seq"] != seq + 1:
            problems.append(f"{path}:{n}: entry {e['seq']} follows {seq}: entries removed")
        if e.get("prev") != prev:
            problems.append(f"{path}:{n}: entry {e['seq']} does not link to the one before")
        if e.get("hash") != entry_hash(e):
            problems.append(f"{path}:{n}: entry {e['seq']} was changed after it was written")
        prev, seq = str(e.get("hash")), e["seq"]
        entries.append(e)
    head = path.with_suffix(".head")
    if head.exists():
        try:
            hseq, hhash = head.read_text().split()
            if int(hseq) != seq or hhash != prev:
                problems.append(f"{head}: the log ends at entry {seq}, its head says "
                                f"{hseq}: entries removed from the end")
        except ValueError:
            problems.append(f"{head}: damaged")
    elif lines:
        problems.append(f"{head}: missing")
    return entries, problems
