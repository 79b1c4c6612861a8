"""A federation's private PKI: one CA, a server certificate, one client certificate a device,
and the list of revoked ones.

`genofed broker init` makes the CA and the broker's identities. A device makes its own key and
a certificate request (`genofed agent enroll`, `agent/tlskey.py`); `genofed broker sign-device`
signs the request here (`sign_request`), so no device's private key is ever on the broker
host. `add_device` makes key and certificate here, for the demo and tests. Mosquitto takes
each client's identity from its certificate's common name (`use_identity_as_username`), and
the ACL (`broker/deploy.py`) is written in terms of it, so a device can only ever speak as
itself. `revoke` puts a device's certificate on the CRL (`crl.pem`) Mosquitto checks at every
connection. Keys are EC P-256: small certificates and fast handshakes on a Raspberry Pi.
Private keys are written 0600, atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from genofed import atomic
from genofed.errors import LocalInputError
from genofed.protocol.topics import ADMIN, AGGREGATOR, RESERVED_IDS, check_name

__all__ = ["ADMIN", "AGGREGATOR", "Identity", "PkiLayout", "add_device", "issue", "make_ca",
           "revoke", "sign_request", "write_crl"]


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
    def crl(self) -> Path:
        return self.root / "crl.pem"

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


def _certificate(layout: PkiLayout, cn: str, public_key: CertificatePublicKeyTypes,
                 federation: str, *, server: bool = False,
                 hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                 days: int = 825) -> x509.Certificate:
    """A certificate for `cn` and `public_key`, signed by the CA."""
    ca_cert, ca_key = _load_ca(layout)
    now = dt.datetime.now(dt.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(cn, federation))
               .issuer_name(ca_cert.subject).public_key(public_key)
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
    return builder.sign(ca_key, hashes.SHA256())


def issue(layout: PkiLayout, ident: Identity, federation: str, *, server: bool = False,
          hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: int = 825) -> Identity:
    """Make a key for `ident` here and a certificate for it signed by the CA; refuses to
    replace an existing one."""
    if ident.cert.exists():
        raise LocalInputError(f"{ident.cert}: identity {ident.name!r} already exists")
    key = _key()
    cert = _certificate(layout, ident.name, key.public_key(), federation, server=server,
                        hosts=hosts, days=days)
    _write_key(ident.key, key)
    _write_cert(ident.cert, cert)
    return ident


def _check_device(layout: PkiLayout, device: str) -> None:
    check_name("device id", device)
    if device in RESERVED_IDS:
        raise LocalInputError(f"device id {device!r} is reserved")
    if device in revoked_devices(layout):
        raise LocalInputError(f"device {device!r} was revoked; a revoked id is never reused "
                              f"(its ACL entry denies it everything): pick another id")
    if layout.client(device).cert.exists():
        raise LocalInputError(f"{layout.client(device).cert}: device {device!r} already has "
                              f"a certificate")


def add_device(layout: PkiLayout, federation: str, device: str) -> Identity:
    """Enroll one more device with a key made here (demo and tests): a client certificate
    whose common name is its id."""
    _check_device(layout, device)
    return issue(layout, layout.client(device), federation)


def sign_request(layout: PkiLayout, federation: str, request: bytes, *,
                 device: str | None = None, days: int = 825) -> tuple[str, Path]:
    """Sign a device's certificate request (PEM) with the CA: a client certificate for the
    request's key, whose common name is the request's (or refused when `device` names
    another). The subject is ours (`O=genofed <federation>`), whatever else the request says.
    Returns the device id and the certificate, kept under `clients/` for revocation."""
    try:
        csr = x509.load_pem_x509_csr(request)
    except ValueError as exc:
        raise LocalInputError(f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise LocalInputError("the certificate request's signature does not verify")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise LocalInputError("the certificate request names no single common name (the "
                              "device id)")
    cn = names[0].value
    if device is not None and cn != device:
        raise LocalInputError(f"the certificate request is for {cn!r}, not {device!r}")
    key = csr.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 256):
        raise LocalInputError(f"the certificate request's key is {type(key).__name__}; "
                              f"devices use EC P-256 (`genofed agent enroll` makes one)")
    _check_device(layout, cn)
    cert = _certificate(layout, cn, key, federation, days=days)
    _write_cert(layout.client(cn).cert, cert)
    return cn, layout.client(cn).cert


def write_crl(layout: PkiLayout, revoked: dict[str, int]) -> Path:
    """(Re)write the CRL: the serials of `revoked` (device -> serial), signed by the CA.

    Its next update is the CA's own expiry, not days away: OpenSSL refuses every client once
    a CRL is past its next update, and nothing here re-signs it on a schedule."""
    ca_cert, ca_key = _load_ca(layout)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(ca_cert.not_valid_after_utc))
    for serial in sorted(revoked.values()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    atomic.write_bytes(layout.crl, crl.public_bytes(serialization.Encoding.PEM))
    atomic.write_bytes(layout.root / "revoked.json",
                       json.dumps(dict(sorted(revoked.items())), indent=2).encode())
    return layout.crl


def revoked_devices(layout: PkiLayout) -> dict[str, int]:
    """The devices revoked so far, with their certificates' serials (`revoked.json`)."""
    path = layout.root / "revoked.json"
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {str(k): int(v) for k, v in doc.items()}
    except (ValueError, AttributeError) as exc:
        raise LocalInputError(f"{path}: not a revocation list: {exc}") from None


def revoke(layout: PkiLayout, device: str) -> int:
    """Put `device`'s certificate on the CRL; returns its serial. The broker checks the new
    CRL once it reloads it (SIGHUP); see `broker/deploy.py` for the ACL half."""
    check_name("device id", device)
    revoked = revoked_devices(layout)
    if device in revoked:
        raise LocalInputError(f"device {device!r} is already revoked")
    path = layout.client(device).cert
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise LocalInputError(f"{path}: no certificate was issued to {device!r} here") from None
    except ValueError as exc:
        raise LocalInputError(f"{path}: not a PEM certificate: {exc}") from None
    write_crl(layout, {**revoked, device: cert.serial_number})
    return cert.serial_number
