"""Ed25519 signatures on bundle manifests (PyNaCl), and the coordinator's key files.

The coordinator signs the exact bytes of manifest.json; the signature is manifest.sig (64 raw
bytes). The manifest lists the sha256 of every other file, so one signature covers the
bundle. A device holds the coordinator's verify key (a hex file named in its config) and
refuses a bundle whose signature does not verify under it.
"""

from __future__ import annotations

import os
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from genofed import atomic
from genofed.errors import LocalInputError

SIGNATURE = "manifest.sig"


def sign_manifest(root: Path, key: SigningKey) -> None:
    """Write root/manifest.sig: key's signature of root/manifest.json's bytes."""
    data = (Path(root) / "manifest.json").read_bytes()
    atomic.write_bytes(Path(root) / SIGNATURE, key.sign(data).signature)


def verify_manifest(root: Path, data: bytes, key: VerifyKey) -> None:
    """Check that manifest.sig signs `data` (the manifest's bytes) under key, or raise."""
    sig_path = Path(root) / SIGNATURE
    try:
        sig = sig_path.read_bytes()
    except FileNotFoundError:
        raise LocalInputError(f"bundle {root}: unsigned ({SIGNATURE} not found); "
                              "refusing it") from None
    except OSError as exc:
        raise LocalInputError(f"bundle {root}: cannot read {SIGNATURE}: {exc}") from None
    try:
        key.verify(data, sig)
    except (BadSignatureError, ValueError, TypeError):
        raise LocalInputError(f"bundle {root}: {SIGNATURE} does not verify under the trusted "
                              f"coordinator key {bytes(key).hex()[:16]}...; refusing it") from None


def generate_signing_key() -> SigningKey:
    """A fresh coordinator signing key."""
    return SigningKey.generate()


def save_signing_key(path: Path, key: SigningKey) -> None:
    """Write a signing key as hex, readable by its owner only."""
    atomic.write_bytes(path, bytes(key).hex().encode() + b"\n", mode=0o600)


def save_verify_key(path: Path, key: VerifyKey) -> None:
    """Write a verify key as hex (public: for devices' configs)."""
    atomic.write_bytes(path, bytes(key).hex().encode() + b"\n")


def load_signing_key(path: Path) -> SigningKey:
    """Read a hex signing key file; refuses one others can read."""
    raw = _read_hex(path, "signing key")
    if os.stat(path).st_mode & 0o077:
        raise LocalInputError(f"{path}: signing key is readable by others; chmod 600 it")
    return SigningKey(raw)


def ensure_signing_key(path: Path) -> SigningKey:
    """The signing key in `path`, made (0600) if the file does not exist yet."""
    if not Path(path).exists():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_signing_key(path, generate_signing_key())
    return load_signing_key(path)


def load_verify_key(path: Path) -> VerifyKey:
    """Read a hex verify key file (the coordinator's public key)."""
    return VerifyKey(_read_hex(path, "verify key"))


def _read_hex(path: Path, what: str) -> bytes:
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        raise LocalInputError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalInputError(f"{path}: cannot read {what}: {exc}") from None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise LocalInputError(f"{path}: {what} must be 64 hex digits") from None
    if len(raw) != 32:
        raise LocalInputError(f"{path}: {what} must be 64 hex digits, got {len(text)}")
    return raw
