"""The broker deployment's files: sizing, mosquitto.conf, ACL, device keys made on the device
and signed by the CA, revocation; and the CLI around them (real files, no broker)."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from support.tasks import open_task

from genofed.agent import tlskey
from genofed.agent.tlskey import ensure_request
from genofed.aggregator.flight import message_limit
from genofed.broker.deploy import (
    MQTT_OVERHEAD,
    Sizing,
    configure,
    init_broker,
    render_acl,
    revoke_device,
    sign_device,
    sizing_of,
)
from genofed.broker.pki import PkiLayout, revoked_devices
from genofed.cli.main import main
from genofed.errors import LocalInputError
from genofed.protocol.schema import ModelRelease
from genofed.protocol.secagg import SigningIdentity


@pytest.fixture
def broker(tmp_path: Path) -> Path:
    root = tmp_path / "brk"
    init_broker(root, "fed", ["dev00"], sizing=Sizing(5000, 10))
    return root


def _request(tmp_path: Path, device: str, federation: str = "fed") -> bytes:
    """A request made as a device makes it: `openssl`, key beside it."""
    key, cert, csr = (tmp_path / f"{device}.{s}" for s in ("key", "crt", "csr"))
    assert ensure_request(key, cert, csr, device, federation) is not None
    return csr.read_bytes()


def test_largest_message_bounds_every_message_of_such_a_deployment() -> None:
    s = Sizing(max_params=20_000, max_devices=50)
    agg = SigningIdentity.generate()
    release = ModelRelease("f" * 64, 7, "a" * 64, np.zeros(s.max_params, np.int8),
                           np.ones(s.max_params, np.float32)).seal(agg)
    roster = {f"{i:064d}": SigningIdentity.generate().public for i in range(s.max_devices)}
    task = open_task("f" * 64, 3, roster, agg.public, s.max_params + 1).seal(agg)
    upload = message_limit(s.max_params + 1, s.max_devices)  # the aggregator's own limit
    for payload in (len(release), len(task), upload):
        assert payload + MQTT_OVERHEAD <= s.largest_message
    assert s.largest_message == upload + MQTT_OVERHEAD  # and no looser than that
    assert Sizing(100, 3).max_queued_bytes == 16 << 20
    assert Sizing().max_queued_bytes == 100 * Sizing().largest_message
    with pytest.raises(LocalInputError, match="max-params"):
        Sizing(0, 3)


def test_configuration_binds_ids_checks_the_crl_bounds_packets_and_saves_by_time(
        broker: Path) -> None:
    conf = dict(line.split(" ", 1) for line in (broker / "mosquitto.conf").read_text()
                .splitlines() if line and not line.startswith("#"))
    assert conf["use_identity_as_username"] == "true"
    assert conf["use_username_as_clientid"] == "true"
    assert conf["crlfile"] == str((broker / "crl.pem").resolve())
    assert (conf["autosave_on_changes"], conf["autosave_interval"]) == ("false", "1")
    assert int(conf["max_packet_size"]) == Sizing(5000, 10).largest_message
    assert int(conf["max_queued_bytes"]) == Sizing(5000, 10).max_queued_bytes
    crl = x509.load_pem_x509_crl((broker / "crl.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((broker / "ca.crt").read_bytes())
    assert len(list(crl)) == 0 and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    # OpenSSL refuses everyone once a CRL is past its next update: it lasts as the CA does.
    assert crl.next_update_utc == ca.not_valid_after_utc


def test_a_request_made_on_the_device_is_signed_for_its_id(broker: Path,
                                                           tmp_path: Path) -> None:
    key = tmp_path / "pi01.key"
    request = _request(tmp_path, "pi01")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE" not in request
    device, cert_path = sign_device(broker, request, "pi01")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate((broker / "ca.crt").read_bytes())
    assert device == "pi01" and cert_path == PkiLayout(broker).client("pi01").cert
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pi01"
    own = serialization.load_pem_private_key(key.read_bytes(), None)
    assert cert.public_key() == own.public_key()
    assert not PkiLayout(broker).client("pi01").key.exists()  # no device key on the host
    # The request once more, or another request for a taken id: refused.
    with pytest.raises(LocalInputError, match="already has a certificate"):
        sign_device(broker, request)
    # The device keeps its key; `agent enroll` again only rewrites the request.
    assert ensure_request(key, tmp_path / "none.crt", tmp_path / "again.csr", "pi01",
                          "fed") is not None
    assert ensure_request(key, cert_path, tmp_path / "x.csr", "pi01", "fed") is None


@pytest.mark.parametrize("case", ["other id", "reserved", "bad name", "tampered", "rsa",
                                  "not pem"])
def test_bad_requests_are_refused(broker: Path, tmp_path: Path, case: str) -> None:
    if case == "other id":
        request, device, why = _request(tmp_path, "pi02"), "pi03", "not 'pi03'"
    elif case == "reserved":
        request, device, why = _request(tmp_path, "aggregator"), None, "reserved"
    elif case == "bad name":
        request, device, why = _csr(ec.generate_private_key(ec.SECP256R1()), "a/b"), None, \
            "must be 1-64 characters"
    elif case == "tampered":
        pem = _request(tmp_path, "pi04")
        der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
        der[-5] ^= 1  # the signature
        request, device, why = x509.load_der_x509_csr(bytes(der)).public_bytes(
            serialization.Encoding.PEM), None, "does not verify"
    elif case == "rsa":
        request, device, why = _csr(rsa.generate_private_key(65537, 2048), "pi05"), None, \
            "EC P-256"
    else:
        request, device, why = b"hello", None, "not a PEM certificate request"
    with pytest.raises(LocalInputError, match=why):
        sign_device(broker, request, device)


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def test_revocation_lists_the_certificate_and_denies_the_id(broker: Path,
                                                           tmp_path: Path) -> None:
    sign_device(broker, _request(tmp_path, "pi01"))
    serial = revoke_device(broker, "pi01")
    crl = x509.load_pem_x509_crl((broker / "crl.pem").read_bytes())
    assert [r.serial_number for r in crl] == [serial]
    cert = x509.load_pem_x509_certificate(PkiLayout(broker).client("pi01").cert.read_bytes())
    assert cert.serial_number == serial
    revoke_device(broker, "dev00")
    assert {r.serial_number for r in x509.load_pem_x509_crl(
        (broker / "crl.pem").read_bytes())} == set(revoked_devices(PkiLayout(broker)).values())
    acl = (broker / "acl").read_text()
    assert "user pi01\ntopic deny #" in acl and "user dev00\ntopic deny #" in acl
    with pytest.raises(LocalInputError, match="already revoked"):
        revoke_device(broker, "pi01")
    with pytest.raises(LocalInputError, match="no certificate was issued"):
        revoke_device(broker, "nobody")
    # A revoked id is never issued again (its ACL entry denies it everything).
    (PkiLayout(broker).client("pi01").cert).unlink()
    with pytest.raises(LocalInputError, match="was revoked"):
        sign_device(broker, _request(tmp_path / "again", "pi01"))


def test_acl_denies_revoked_devices_after_the_patterns() -> None:
    acl = render_acl("fed", ("dev07",))
    assert acl.index("pattern write") < acl.index("user dev07\ntopic deny #")
    assert "deny" not in render_acl("fed")


def test_configure_resizes_and_upgrades_an_old_directory(broker: Path) -> None:
    (broker / "crl.pem").unlink()  # as a directory made before there was a CRL
    configure(broker, Sizing(200_000, 20))
    assert sizing_of(broker) == Sizing(200_000, 20)
    assert (broker / "crl.pem").exists()
    text = (broker / "mosquitto.conf").read_text()
    assert f"max_packet_size {Sizing(200_000, 20).largest_message}\n" in text
    assert "listener 8883 0.0.0.0" in text  # from broker.json, not a test's port


def test_openssl_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tlskey.shutil, "which", lambda name: None)
    with pytest.raises(LocalInputError, match="openssl not found"):
        tlskey.make_key(tmp_path / "k")


AGENT = """device_id = "pi01"
federation = "fed"
bundle = "b"
vcf = "v.vcf"
phenotypes = "p.tsv"
state_dir = "devstate"
aggregator_key = "agg.pub"
[broker]
ca = "tls/ca.crt"
cert = "tls/pi01.crt"
key = "tls/pi01.key"
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out.strip(), out.err.strip()


def test_the_commands_of_the_default_path(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    brk = tmp_path / "brk"
    rc, out, _ = _run(capsys, "broker", "init", "--out", str(brk), "--federation", "fed",
                      "--max-params", "5000", "--max-devices", "10")
    assert rc == 0 and f"packets up to {Sizing(5000, 10).largest_message} bytes" in out
    assert sorted(p.name for p in (brk / "clients").iterdir()) == [
        "admin.crt", "admin.key", "aggregator.crt", "aggregator.key"]  # no device keys
    (tmp_path / "agent.toml").write_text(AGENT)
    rc, out, _ = _run(capsys, "agent", "enroll", "--config", str(tmp_path / "agent.toml"))
    first, tls = out.splitlines()
    assert rc == 0 and first.split()[0] == "pi01" and "new TLS key" in tls
    csr = tmp_path / "tls" / "pi01.csr"
    rc, _, err = _run(capsys, "broker", "sign-device", "--dir", str(brk), "--csr", str(csr),
                      "--device", "pi02")
    assert rc == 1 and "not 'pi02'" in err and "\n" not in err
    rc, out, _ = _run(capsys, "broker", "sign-device", "--dir", str(brk), "--csr", str(csr),
                      "--device", "pi01", "-o", str(tmp_path / "tls" / "pi01.crt"))
    assert rc == 0 and (tmp_path / "tls" / "pi01.crt").exists()
    rc, out, _ = _run(capsys, "agent", "enroll", "--config", str(tmp_path / "agent.toml"))
    assert rc == 0 and len(out.splitlines()) == 1  # key and certificate in place
    rc, out, _ = _run(capsys, "broker", "revoke-device", "--dir", str(brk), "--device", "pi01")
    assert rc == 0 and "kill -HUP" in out and "aggregator unenroll" in out
    rc, _, err = _run(capsys, "broker", "sign-device", "--dir", str(tmp_path / "nothing"),
                      "--csr", str(csr))
    assert rc == 1 and "not a broker directory" in err

