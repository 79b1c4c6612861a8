"""`genofed broker init` and `add-device`: a Mosquitto configuration for a real deployment.

The result, under one directory:

    ca.crt, private/ca.key           the federation's CA (keep ca.key offline once enrolled)
    server.crt, private/server.key   the broker's TLS identity
    clients/<id>.crt, <id>.key       one identity per device, plus `aggregator` and `admin`
    acl                              who may read and write which topic
    mosquitto.conf                   TLS-only listener, client certificates required,
                                     identity = certificate CN, no anonymous access,
                                     persistence on, saved after every change
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genofed import atomic
from genofed.broker.pki import ADMIN, AGGREGATOR, PkiLayout, add_device, issue, make_ca
from genofed.errors import LocalInputError
from genofed.protocol.topics import PREFIX, check_name


@dataclass(frozen=True)
class BrokerSetup:
    """What `init_broker` wrote."""

    root: Path
    federation: str
    port: int
    devices: tuple[str, ...]

    @property
    def pki(self) -> PkiLayout:
        return PkiLayout(self.root)


def render_acl(federation: str) -> str:
    """The ACL: a device writes only its own outbox and status, reads only what is its own."""
    base = f"{PREFIX}/{check_name('federation', federation)}"
    return "\n".join([
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
    ])


def render_conf(*, port: int, bind: str, data_dir: Path, log_file: Path,
                pki: PkiLayout | None = None, acl_file: Path | None = None,
                run_as: str | None = None) -> str:
    """A mosquitto.conf; with `pki`, TLS-only with client certificates and no anonymous.

    Started as root, Mosquitto drops to the user `mosquitto` unless `run_as` names another;
    a deployment keeps that default and gives the `mosquitto` user read access to the files.
    """
    lines = [
        "# written by genofed",
        *([f"user {run_as}"] if run_as else []),
        "per_listener_settings false",
        f"allow_anonymous {'false' if pki else 'true'}",
        "persistence true",
        f"persistence_location {data_dir.resolve()}/",
        # Save after every change, not every 30 minutes (the default): a broker that crashes
        # keeps the retained model and task, the sessions and the updates queued for them.
        "autosave_on_changes true",
        "autosave_interval 1",
        f"log_dest file {log_file.resolve()}",
        "log_type error", "log_type warning", "log_type notice",
        "max_packet_size 67108864",
        "max_queued_messages 10000",
    ]
    if acl_file:
        lines.append(f"acl_file {acl_file.resolve()}")
    lines.append(f"listener {port} {bind}")
    if pki:
        lines += [f"cafile {pki.ca_cert.resolve()}",
                  f"certfile {pki.server.cert.resolve()}",
                  f"keyfile {pki.server.key.resolve()}",
                  "require_certificate true",
                  "use_identity_as_username true",
                  "tls_version tlsv1.2"]
    return "\n".join(lines) + "\n"


def init_broker(out: Path, federation: str, devices: int | list[str], *, port: int = 8883,
                bind: str = "0.0.0.0", hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                ) -> BrokerSetup:
    """Create the CA, identities, ACL and mosquitto.conf for a federation under `out`."""
    check_name("federation", federation)
    names = [f"dev{i:02d}" for i in range(devices)] if isinstance(devices, int) else devices
    if out.exists() and any(out.iterdir()):
        raise LocalInputError(f"{out}: not empty; broker init writes a fresh directory")
    pki = PkiLayout(out)
    make_ca(pki, federation)
    issue(pki, pki.server, federation, server=True, hosts=hosts)
    for special in (AGGREGATOR, ADMIN):
        issue(pki, pki.client(special), federation)
    for name in names:
        add_device(pki, federation, name)
    atomic.write_bytes(out / "acl", render_acl(federation).encode())
    atomic.write_bytes(out / "broker.json", json.dumps(
        {"federation": federation, "port": port, "bind": bind}, indent=2).encode())
    (out / "data").mkdir()
    write_conf(out, port=port, bind=bind)
    return BrokerSetup(root=out, federation=federation, port=port, devices=tuple(names))


def enroll(out: Path, device: str) -> Path:
    """Add one device to an initialized broker directory; returns its certificate."""
    try:
        meta = json.loads((out / "broker.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise LocalInputError(f"{out}: not a broker directory (no valid broker.json); run "
                              f"`genofed broker init` first") from None
    return add_device(PkiLayout(out), str(meta["federation"]), device).cert


def write_conf(out: Path, *, port: int, bind: str = "127.0.0.1",
               run_as: str | None = None) -> Path:
    """(Re)write `out/mosquitto.conf` for the broker directory `out` on `port`."""
    conf = render_conf(port=port, bind=bind, data_dir=out / "data",
                       log_file=out / "mosquitto.log", pki=PkiLayout(out),
                       acl_file=out / "acl", run_as=run_as)
    atomic.write_bytes(out / "mosquitto.conf", conf.encode())
    return out / "mosquitto.conf"
