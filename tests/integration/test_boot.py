"""Bad days at boot: the broker is not up yet, or a device's clock is two days off.

Neither is bad local input, so neither may end a daemon with status 1 (which a service
manager is told not to restart): each waits for the broker, says why in one line, and joins
the federation once the cause is gone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fedtools import all_exit_cleanly, logs, stop_all, wait_until

from genofed.aggregator.state import read_journal
from genofed.broker.deploy import init_broker
from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.pki import PkiLayout
from genofed.cli.demo import spawn_federation, start_broker, write_configs

pytestmark = pytest.mark.integration


def _journal(root: Path) -> list[tuple[str, int]]:
    return [(str(r["status"]), int(r["participants"]))  # type: ignore[call-overload]
            for r in read_journal(root / "state" / "aggregator")]


def test_broker_down_at_boot_everyone_waits_and_says_why(tmp_path: Path, cohort: Path,
                                                          logreg_bundle: Path) -> None:
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    init_broker(tmp_path / "broker", "demo", [d.name for d in dirs], bind="127.0.0.1")
    broker = LocalMosquitto(tmp_path / "broker", secured=tmp_path / "broker")  # not started
    cfg = write_configs(tmp_path, logreg_bundle, dirs, broker.port, rounds=1,
                        min_participants=3)
    procs = spawn_federation(tmp_path, cfg, [d.name for d in dirs])
    try:
        every_log = [tmp_path / "logs" / f"{n}.log"
                     for n in ["aggregator", *[d.name for d in dirs]]]
        wait_until("every daemon saying why it waits", lambda: all(
            "cannot reach 127.0.0.1" in p.read_text() for p in every_log), timeout_s=60)
        assert all(p.poll() is None for p in procs), logs(tmp_path)
        broker.start()
        all_exit_cleanly(tmp_path, procs[0], procs[1:], timeout_s=120)
    finally:
        stop_all(procs, broker)
    assert _journal(tmp_path) == [("completed", 3)]


def _redate(cert_path: Path, ca: PkiLayout, *, days: int) -> bytes:
    """Re-sign the certificate at `cert_path` with the CA, valid only from `days` from now;
    returns the original bytes."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    original = cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(original)
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)
    b = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
         .public_key(cert.public_key()).serial_number(cert.serial_number)
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=30)))
    for ext in cert.extensions:
        b = b.add_extension(ext.value, critical=ext.critical)
    cert_path.write_bytes(b.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
                          .public_bytes(serialization.Encoding.PEM))
    return original


def test_clock_two_days_off_waits_for_ntp_then_joins(tmp_path: Path, cohort: Path,
                                                     logreg_bundle: Path) -> None:
    # A device whose clock runs two days behind sees the broker's certificate as not yet
    # valid. libfaketime would set a process's clock back, but it stalls Python's timed
    # waits, so the test does the same to TLS the other way round: the broker presents a
    # certificate valid from two days ahead, until "NTP fixes the clock" (the certificate is
    # dated right again and the broker restarted). Every daemon must wait, say why, and join.
    dirs = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    broker = start_broker(tmp_path, [d.name for d in dirs])
    pki = PkiLayout(tmp_path / "broker")
    broker.stop()
    original = _redate(pki.server.cert, pki, days=2)
    broker.start()
    cfg = write_configs(tmp_path, logreg_bundle, dirs, broker.port, rounds=1,
                        min_participants=3)
    procs = spawn_federation(tmp_path, cfg, [d.name for d in dirs])
    try:
        device_log = tmp_path / "logs" / f"{dirs[0].name}.log"
        wait_until("a device saying its clock may be wrong", lambda: "certificate is not yet "
                   "valid; this machine's clock says" in device_log.read_text(), timeout_s=60)
        assert all(p.poll() is None for p in procs), logs(tmp_path)  # waiting, not exited
        broker.stop()
        pki.server.cert.write_bytes(original)
        broker.start()
        all_exit_cleanly(tmp_path, procs[0], procs[1:], timeout_s=120)
    finally:
        stop_all(procs, broker)
    assert _journal(tmp_path) == [("completed", 3)]
