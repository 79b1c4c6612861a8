"""`genofed broker init`, `sign-device`, `revoke-device`: a Mosquitto deployment.

The result, under one directory:

    ca.crt, private/ca.key           the federation's CA (signs devices and revocations)
    server.crt, private/server.key   the broker's TLS identity
    clients/<id>.crt                 every certificate issued (kept for revocation); the
      <id>.key                         key beside it only for identities made here (the
                                       aggregator, admin, and `--devices N` of the demo)
    crl.pem, revoked.json            revoked certificates, and whose they were
    acl                              who may read and write which topic; revoked ids nothing
    broker.json                      federation, listener and sizing, to render the rest
    mosquitto.conf                   TLS only, client certificates checked against the CRL,
                                     identity = certificate CN = client id, no anonymous
                                     access, packets bounded by the largest legitimate
                                     message, persistence saved by time (docs:
                                     ARCHITECTURE.md, "MQTT", for the window)

Sizing (`Sizing`): the deployment says how large a model (parameters) and a round (devices)
it expects, and the broker refuses any packet larger than the largest message such a round
can carry: Mosquitto disconnects a client that sends one, before reading its body.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genofed import atomic
from genofed.aggregator.flight import message_limit
from genofed.broker.pki import (
    ADMIN,
    AGGREGATOR,
    PkiLayout,
    add_device,
    issue,
    make_ca,
    revoke,
    revoked_devices,
    sign_request,
    write_crl,
)
from genofed.errors import LocalInputError
from genofed.protocol.envelope import MAX_HEADER_BYTES, ROSTER_BYTES_PER_DEVICE
from genofed.protocol.topics import PREFIX, check_name

# How often Mosquitto saves its whole state to disk (s). A broker killed outright loses what
# it acknowledged since the last save; see docs/ARCHITECTURE.md, "MQTT", for the window
# measured and `benchmarks/broker_flood.py` for how.
AUTOSAVE_S = 1
MQTT_OVERHEAD = 1024  # fixed header, topic (< 200 bytes), packet id, properties


@dataclass(frozen=True)
class Sizing:
    """What a deployment expects: the largest model (parameters) and the largest round
    (devices). The broker's packet and queue bounds follow from it."""

    max_params: int = 100_000
    max_devices: int = 100

    def __post_init__(self) -> None:
        if self.max_params < 1 or self.max_devices < 1:
            raise LocalInputError(f"sizing: --max-params and --max-devices must be >= 1, got "
                                  f"{self.max_params} and {self.max_devices}")

    @property
    def largest_message(self) -> int:
        """The largest MQTT packet any party of such a deployment sends: a device's round
        message (the limit the aggregator applies, `aggregator/flight.py`, which also bounds
        what it routes to one device), a model release (1 byte a parameter, 4 bytes a
        channel, at most one channel a parameter, and its signed header), or a task (whose
        signed header lists the roster: at most 8 KiB and ROSTER_BYTES_PER_DEVICE a device,
        and never more than MAX_HEADER_BYTES)."""
        upload = message_limit(self.max_params + 1, self.max_devices)
        release = 5 * self.max_params + 4096
        task = min(MAX_HEADER_BYTES, 8192 + ROSTER_BYTES_PER_DEVICE * self.max_devices) + 4096
        return max(upload, release, task) + MQTT_OVERHEAD

    @property
    def max_queued_bytes(self) -> int:
        """Bytes the broker holds for one client beyond those in flight: one stage of every
        device's largest message (what devices send while the aggregator is away: they
        answer only what it asked), and no less than 16 MiB. Past it Mosquitto drops what
        comes for that client, so a flood while the aggregator is away costs at most this
        much memory and persistence file, and a legitimate message that finds the queue full
        is lost (its sender a dropout of the stage)."""
        return max(16 << 20, self.max_devices * self.largest_message)


@dataclass(frozen=True)
class BrokerSetup:
    """What `init_broker` wrote."""

    root: Path
    federation: str
    port: int
    devices: tuple[str, ...]
    sizing: Sizing = field(default_factory=Sizing)

    @property
    def pki(self) -> PkiLayout:
        return PkiLayout(self.root)


def render_acl(federation: str, revoked: tuple[str, ...] = ()) -> str:
    """The ACL: a device writes only its own outbox and status, reads only what is its own;
    a revoked device nothing at all."""
    base = f"{PREFIX}/{check_name('federation', federation)}"
    lines = [
        f"# genofed ACL for federation {federation}. Identities are certificate CNs.",
        f"user {AGGREGATOR}",
        f"topic read {base}/device/+/outbox",
        f"topic read {base}/device/+/status",
        f"topic write {base}/server/#",
        f"topic write {base}/device/+/inbox",
        "",
        f"user {ADMIN}",
        f"topic read {PREFIX}/#",
        "",
        "# Every other identity is a device, and only itself.",
        f"pattern write {base}/device/%u/outbox",
        f"pattern write {base}/device/%u/status",
        f"pattern read {base}/device/%u/inbox",
        f"pattern read {base}/server/#",
        "",
    ]
    if revoked:
        lines.append("# Revoked (their certificates are on the CRL too): a session still "
                     "connected reads and writes nothing once the broker reloads this.")
    for device in revoked:
        lines += [f"user {check_name('device id', device)}", "topic deny #", ""]
    return "\n".join(lines)


def render_conf(*, port: int, bind: str, data_dir: Path, log_file: Path,
                pki: PkiLayout | None = None, acl_file: Path | None = None,
                run_as: str | None = None, sizing: Sizing | None = None) -> str:
    """A mosquitto.conf; with `pki`, TLS-only with client certificates checked against the
    CRL, the certificate's CN as username and client id, and no anonymous access.

    Started as root, Mosquitto drops to the user `mosquitto` unless `run_as` names another;
    a deployment keeps that default and gives the `mosquitto` user read access to the files.
    """
    sizing = sizing or Sizing()
    lines = [
        "# written by genofed",
        *([f"user {run_as}"] if run_as else []),
        "per_listener_settings false",
        f"allow_anonymous {'false' if pki else 'true'}",
        "persistence true",
        f"persistence_location {data_dir.resolve()}/",
        # The whole state is saved every AUTOSAVE_S seconds, not after every change (which
        # rewrote the whole file per queued message and stalled the broker under a flood),
        # nor every 30 minutes (the default).
        "autosave_on_changes false",
        f"autosave_interval {AUTOSAVE_S}",
        f"log_dest file {log_file.resolve()}",
        "log_type error", "log_type warning", "log_type notice",
        # A larger packet is a protocol error: Mosquitto disconnects its sender.
        f"max_packet_size {sizing.largest_message}",
        "max_queued_messages 10000",
        f"max_queued_bytes {sizing.max_queued_bytes}",
    ]
    if acl_file:
        lines.append(f"acl_file {acl_file.resolve()}")
    lines.append(f"listener {port} {bind}")
    if pki:
        lines += [f"cafile {pki.ca_cert.resolve()}",
                  f"certfile {pki.server.cert.resolve()}",
                  f"keyfile {pki.server.key.resolve()}",
                  f"crlfile {pki.crl.resolve()}",
                  "require_certificate true",
                  "use_identity_as_username true",
                  # The client id a client asks for is replaced by its certificate's CN: no
                  # certificate can take over another client's session (the aggregator's).
                  "use_username_as_clientid true",
                  "tls_version tlsv1.2"]
    return "\n".join(lines) + "\n"


def init_broker(out: Path, federation: str, devices: int | list[str] = 0, *,
                port: int = 8883, bind: str = "0.0.0.0",
                hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                sizing: Sizing | None = None) -> BrokerSetup:
    """Create the CA, the broker's identities (server, aggregator, admin), an empty CRL, the
    ACL and mosquitto.conf for a federation under `out`. `devices` (a count or names) makes
    device keys here too: for the demo and tests; a deployment's devices make their own
    (`sign_device`)."""
    check_name("federation", federation)
    sizing = sizing or Sizing()
    names = [f"dev{i:02d}" for i in range(devices)] if isinstance(devices, int) else devices
    if out.exists() and any(out.iterdir()):
        raise LocalInputError(f"{out}: not empty; broker init writes a fresh directory")
    pki = PkiLayout(out)
    make_ca(pki, federation)
    write_crl(pki, {})
    issue(pki, pki.server, federation, server=True, hosts=hosts)
    for special in (AGGREGATOR, ADMIN):
        issue(pki, pki.client(special), federation)
    for name in names:
        add_device(pki, federation, name)
    atomic.write_bytes(out / "broker.json", json.dumps(
        {"federation": federation, "port": port, "bind": bind, "sizing": asdict(sizing)},
        indent=2).encode())
    atomic.write_bytes(out / "acl", render_acl(federation).encode())
    (out / "data").mkdir()
    write_conf(out, port=port, bind=bind)
    return BrokerSetup(root=out, federation=federation, port=port, devices=tuple(names),
                       sizing=sizing)


def _meta(out: Path) -> dict[str, Any]:
    try:
        meta = json.loads((out / "broker.json").read_text())
        check_name("federation", str(meta["federation"]))
        return dict(meta)
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        raise LocalInputError(f"{out}: not a broker directory (no valid broker.json); run "
                              f"`genofed broker init` first") from None


def _sizing(meta: dict[str, Any]) -> Sizing:
    doc = meta.get("sizing") or {}
    try:
        return Sizing(int(doc.get("max_params", Sizing.max_params)),
                      int(doc.get("max_devices", Sizing.max_devices)))
    except (TypeError, ValueError, AttributeError):
        raise LocalInputError(f"broker.json: bad sizing {doc!r}") from None


def sizing_of(out: Path) -> Sizing:
    """The sizing a broker directory was rendered with."""
    return _sizing(_meta(out))


def enroll(out: Path, device: str) -> Path:
    """Add one device with a key made here (demo and tests); returns its certificate."""
    return add_device(PkiLayout(out), str(_meta(out)["federation"]), device).cert


def sign_device(out: Path, request: bytes, device: str | None = None) -> tuple[str, Path]:
    """Sign a device's certificate request with the federation's CA (`pki.sign_request`);
    returns the device id and its certificate."""
    return sign_request(PkiLayout(out), str(_meta(out)["federation"]), request, device=device)


def revoke_device(out: Path, device: str) -> int:
    """Revoke a device: its certificate onto the CRL, its id denied everything in the ACL.
    Both take effect when the broker reloads them (SIGHUP): from then on it cannot connect,
    and a session still connected can neither publish nor receive. Returns the serial."""
    meta = _meta(out)
    serial = revoke(PkiLayout(out), device)
    atomic.write_bytes(out / "acl", render_acl(str(meta["federation"]),
                                               tuple(revoked_devices(PkiLayout(out)))).encode())
    return serial


def configure(out: Path, sizing: Sizing | None = None) -> Path:
    """Re-render the ACL and mosquitto.conf of a broker directory from its broker.json, with
    new sizing if given (and an empty CRL if it has none: a directory made by an older
    genofed). Mosquitto reads the new packet and queue bounds on SIGHUP; a restart for the
    rest (client ids, CRL file)."""
    meta = _meta(out)
    pki = PkiLayout(out)
    if sizing is not None:
        meta["sizing"] = asdict(sizing)
        atomic.write_bytes(out / "broker.json", json.dumps(meta, indent=2).encode())
    if not pki.crl.exists():
        write_crl(pki, revoked_devices(pki))
    atomic.write_bytes(out / "acl", render_acl(str(meta["federation"]),
                                               tuple(revoked_devices(pki))).encode())
    return write_conf(out, port=int(meta["port"]), bind=str(meta["bind"]))


def write_conf(out: Path, *, port: int, bind: str = "127.0.0.1",
               run_as: str | None = None) -> Path:
    """(Re)write `out/mosquitto.conf` for the broker directory `out` on `port`."""
    conf = render_conf(port=port, bind=bind, data_dir=out / "data",
                       log_file=out / "mosquitto.log", pki=PkiLayout(out),
                       acl_file=out / "acl", run_as=run_as, sizing=_sizing(_meta(out)))
    atomic.write_bytes(out / "mosquitto.conf", conf.encode())
    return out / "mosquitto.conf"
