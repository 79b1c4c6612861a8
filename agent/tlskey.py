"""The device's TLS identity, made on the device: an EC P-256 key that never leaves it, and a
certificate request for the federation's CA to sign (`genofed broker sign-device`).

It runs the `openssl` command rather than a Python library: the device profile has no
`cryptography`, and `openssl` is on every system the agent targets (Debian, Ubuntu and
Raspberry Pi OS install it with `ca-certificates`). Its output goes to stdout and is written
here, atomically, the key 0600 from the first byte.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from genofed import atomic
from genofed.errors import LocalInputError
from genofed.protocol.topics import check_name


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    exe = shutil.which("openssl")
    if exe is None:
        raise LocalInputError("openssl not found: install it (`sudo apt-get install openssl`) "
                              "to make this device's TLS key")
    try:
        done = subprocess.run([exe, *args], input=stdin, capture_output=True, check=True,
                              timeout=60)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()
        raise LocalInputError(f"openssl {args[0]} failed: {detail[-1] if detail else exc}") \
            from None
    return done.stdout


def make_key(key: Path) -> None:
    """A new EC P-256 private key (PKCS#8 PEM) at `key`, mode 0600; refuses to replace one."""
    if key.exists():
        raise LocalInputError(f"{key}: a TLS key is already here")
    pem = _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-pkeyopt", "ec_param_enc:named_curve")
    atomic.write_bytes(key, pem, mode=0o600)


def make_request(key: Path, csr: Path, device: str, federation: str) -> None:
    """A certificate request (PEM) for `key`, whose common name is the device id."""
    check_name("federation", federation)  # no '/' in either: the subject parses as meant
    check_name("device id", device)
    subject = f"/O=genofed {federation}/CN={device}"
    atomic.write_bytes(csr, _openssl("req", "-new", "-sha256", "-key", str(key),
                                     "-subj", subject))


def ensure_request(key: Path, cert: Path, csr: Path, device: str, federation: str) -> str | None:
    """What `genofed agent enroll` does for TLS: make the key if it is missing, and write the
    request while no certificate is in place. Returns what it did, for the user, or None."""
    if key.exists() and cert.exists():
        return None
    made = not key.exists()
    if made:
        make_key(key)
    make_request(key, csr, device, federation)
    return (f"{'new' if made else 'existing'} TLS key {key} (it never leaves this device); "
            f"certificate request {csr}: sign it on the broker host with `genofed broker "
            f"sign-device --dir BROKER_DIR --csr {csr.name} --device {device}` and put the "
            f"certificate at {cert}")
