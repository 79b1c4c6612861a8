"""The aggregator's state folder: its database, its identity, and what other commands read.

`state_dir/aggregator.db` (`store.py`), or the PostgreSQL database of `[store] url`
(`store_pg.py`), and `state_dir/identity.key` (Ed25519, made on first use; an active and a
standby aggregator share it). `enroll_device` and `unenroll_device` are `genofed aggregator
enroll` and `unenroll`; `read_journal` and `read_model` read a running service's database
without disturbing it (the demo and the tests follow rounds so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genofed.aggregator.storage import SqlStore
from genofed.aggregator.store import Store
from genofed.errors import LocalInputError
from genofed.models.manifest import load_bundle
from genofed.models.signing import ensure_signing_key
from genofed.protocol.secagg import IdentityKey, ParameterError, SigningIdentity
from genofed.protocol.secagg.keys import IdentitySeed


def state_path(state_dir: Path) -> Path:
    """The aggregator's database under its state directory."""
    return state_dir / "aggregator.db"


def open_store(state_dir: Path, url: str = "", *, readonly: bool = False) -> SqlStore:
    """The aggregator's store: PostgreSQL at `url` if given, else SQLite in `state_dir`."""
    if url:
        from genofed.aggregator.store_pg import PgStore  # psycopg only where it is used

        return PgStore(url, readonly=readonly)
    return Store(state_path(state_dir), readonly=readonly)


def _exists(state_dir: Path, url: str) -> bool:
    return bool(url) or state_path(state_dir).exists()


def identity_path(state_dir: Path) -> Path:
    """The aggregator's Ed25519 identity key file (made on first start)."""
    return state_dir / "identity.key"


def load_identity(state_dir: Path) -> SigningIdentity:
    """The aggregator's signing identity, created on first use."""
    return SigningIdentity(IdentitySeed(ensure_signing_key(identity_path(state_dir)).encode()))


def enroll_device(state_dir: Path, device: str, public_hex: str, url: str = "") -> None:
    """Store a device's Ed25519 public key: it may then be picked for rounds."""
    try:
        key = IdentityKey(bytes.fromhex(public_hex.strip()))
    except (ValueError, ParameterError) as exc:
        raise LocalInputError(f"device key {public_hex!r}: not a 32-byte hex key: {exc}") from None
    store = open_store(state_dir, url)
    try:
        store.enroll(device, key.raw)
    finally:
        store.close()


def unenroll_device(state_dir: Path, device: str, url: str = "") -> None:
    """Forget a device's public key (`genofed aggregator unenroll`): a running service reads
    its device table every second and drops the device's messages from then on, those the
    broker still held for it included; it is never picked for a round again."""
    if not _exists(state_dir, url):
        raise LocalInputError(f"no aggregator state at {state_path(state_dir)}")
    store = open_store(state_dir, url)
    try:
        if not store.unenroll(device):
            raise LocalInputError(f"device {device!r} is not enrolled with the aggregator")
    finally:
        store.close()


def read_journal(state_dir: Path, url: str = "") -> list[dict[str, object]]:
    """The records of the rounds closed so far (read-only; safe while the service runs)."""
    if not _exists(state_dir, url):
        return []
    try:
        store = open_store(state_dir, url, readonly=True)
    except LocalInputError:
        if url:  # no tables yet: the aggregator has not started
            return []
        raise
    try:
        return store.journal()
    finally:
        store.close()


def read_model(state_dir: Path, version: int, url: str = "") -> np.ndarray:
    """Model `version` as the aggregator stored it (read-only)."""
    store = open_store(state_dir, url, readonly=True)
    try:
        return store.model(version)
    finally:
        store.close()


def model_arrays(state_dir: Path, bundle_path: Path, version: int | None = None,
                 url: str = "") -> tuple[int, str, dict[str, np.ndarray]]:
    """A stored model version (default: the newest, hash-checked) as the bundle's named
    arrays, with its version and model name: what `genofed aggregator model` writes."""
    bundle = load_bundle(bundle_path)
    store = open_store(state_dir, url, readonly=True)
    db = store.where
    try:
        if version is None:
            latest = store.latest_model()
            if latest is None:
                raise LocalInputError(f"{db}: no model stored yet")
            version, weights = latest
        else:
            weights = store.model(version)
    finally:
        store.close()
    if weights.size != bundle.layout.n_params:
        raise LocalInputError(f"{db}: model version {version} has {weights.size} parameters, "
                              f"the bundle {bundle_path} {bundle.layout.n_params}")
    return version, bundle.model, bundle.layout.unflatten(weights)
