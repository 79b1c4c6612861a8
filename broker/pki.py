"""A federation's private PKI: one CA, a server certificate, one client certificate a device.

`genofed broker init` makes the CA and the first identities; `genofed broker add-device` adds
one more. Mosquitto takes each client's identity from its certificate's common name
(`use_identity_as_username`), and the ACL (`broker/acl.py`) is written in terms of it, so a
device can only ever speak as itself. Keys are EC P-256: small certificates and fast handshakes
on a Raspberry Pi. Private keys are written 0600, atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from genofed import atomic
from genofed.errors import LocalInputError
from genofed.protocol.topics import ADMIN, AGGREGATOR, RESERVED_IDS, check_name

__all__ = ["ADMIN", "AGGREGATOR", "Identity", "PkiLayout", "add_device", "issue", "make_ca"]


@dataclass(frozen=True)
class Identity:
    """Where one identity's certificate and key live."""

    name: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class PkiLayout:
    """The files under a broker directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "private" / "ca.key"

    @property
    def server(self) -> Identity:
        return Identity("server", self.root / "server.crt", self.root / "private" / "server.key")

    def client(self, name: str) -> Identity:
        return Identity(name, self.root / "clients" / f"{name}.crt",
                        self.root / "clients" / f"{name}.key")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    atomic.write_bytes(path, pem, mode=0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    atomic.write_bytes(path, cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, federation: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"genofed {federation}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(layout: PkiLayout, federation: str, *, days: int = 3650) -> None:
    """Create the federation's CA; refuses to overwrite an existing one."""
    if layout.ca_key.exists():
        raise LocalInputError(f"{layout.ca_key}: a CA already exists here; use add-device")
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    name = _name(f"genofed {federation} CA", federation)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    layout.ca_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_key(layout.ca_key, key)
    _write_cert(layout.ca_cert, cert)


def _load_ca(layout: PkiLayout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise LocalInputError(f"{exc.filename}: no CA here; run `genofed broker init` first") \
            from None
    except ValueError as exc:
        raise LocalInputError(f"{layout.root}: cannot load the CA: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LocalInputError(f"{layout.ca_key}: not an EC private key")
    return cert, key


def issue(layout: PkiLayout, ident: Identity, federation: str, *, server: bool = False,
          hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 825) -> Identity:
    """Issue a certificate for `ident` signed by the CA; refuses to replace an existing one."""
    if ident.cert.exists():
        raise LocalInputError(f"{ident.cert}: identity {ident.name!r} already exists")
    ca_cert, ca_key = _load_ca(layout)
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(ident.name, federation))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if server:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_key(ident.key, key)
    _write_cert(ident.cert, builder.sign(ca_key, hashes.SHA256()))
    return ident


def add_device(layout: PkiLayout, federation: str, device: str) -> Identity:
    """Enroll one more device: a client certificate whose common name is its id."""
    check_name("device id", device)
    if device in RESERVED_IDS:
        raise LocalInputError(f"device id {device!r} is reserved")
    return issue(layout, layout.client(device), federation)
