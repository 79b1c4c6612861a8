"""`genofed broker ...`: set up and run a deployment's Mosquitto (`broker/`).

A deployment's path: `init` on the broker host (CA, the broker's own identities, CRL, ACL,
mosquitto.conf sized for the federation), then per device `genofed agent enroll` on the device
(its key never leaves it) and `sign-device` here; `revoke-device` when a device is lost.
`--devices N` and `add-device` make device keys on the broker host: for the demo and tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from genofed.errors import LocalInputError


def add_broker_commands(sub: Any) -> None:
    """The `broker` subcommands, on the top-level parser's subparsers."""
    br = sub.add_parser("broker", help="set up the MQTT broker of a deployment").add_subparsers(
        required=True, metavar="ACTION")
    bi = br.add_parser("init", help="CA, broker identities, CRL, ACL and mosquitto.conf for a "
                       "federation")
    bi.add_argument("--out", type=Path, required=True)
    bi.add_argument("--devices", type=int, default=0, help="demo and tests: also make keys "
                    "for dev00 .. devNN here (devices make their own: `agent enroll`, "
                    "`broker sign-device`)")
    bi.add_argument("--federation", default="default")
    bi.add_argument("--port", type=int, default=8883)
    bi.add_argument("--bind", default="0.0.0.0", help="listener address")
    bi.add_argument("--host", action="append", default=[],
                    help="a name or address clients use to reach the broker (repeatable)")
    _sizing_args(bi)
    bi.set_defaults(handler=_broker_init)
    bs = br.add_parser("sign-device", help="sign a device's certificate request (made on the "
                       "device by `genofed agent enroll`) with the federation's CA")
    bs.add_argument("--dir", type=Path, required=True, help="the broker directory")
    bs.add_argument("--csr", type=Path, required=True)
    bs.add_argument("--device", help="refuse a request for any other device id")
    bs.add_argument("--out", "-o", type=Path, help="also write the certificate here")
    bs.set_defaults(handler=_broker_sign_device)
    bv = br.add_parser("revoke-device", help="revoke a device's certificate (CRL) and deny it "
                       "everything (ACL); the broker applies both when reloaded (SIGHUP)")
    bv.add_argument("--dir", type=Path, required=True, help="the broker directory")
    bv.add_argument("--device", required=True)
    bv.add_argument("--aggregator-config", type=Path, help="also un-enroll the device from "
                    "this aggregator (its state on this host)")
    bv.set_defaults(handler=_broker_revoke_device)
    ba = br.add_parser("add-device", help="demo and tests: make one more device's key and "
                       "certificate here (a deployment uses sign-device)")
    ba.add_argument("--dir", type=Path, required=True, help="the broker directory")
    ba.add_argument("--device", required=True)
    ba.set_defaults(handler=_broker_add_device)
    bc = br.add_parser("configure", help="rewrite mosquitto.conf and the ACL of a broker "
                       "directory (new sizing; a directory made by an older genofed)")
    bc.add_argument("--dir", type=Path, required=True, help="the broker directory")
    _sizing_args(bc, defaults=False)
    bc.set_defaults(handler=_broker_configure)


def _sizing_args(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    p.add_argument("--max-params", type=int, default=100_000 if defaults else None,
                   help="parameters of the largest model the federation will train"
                        + (" (100000)" if defaults else ""))
    p.add_argument("--max-devices", type=int, default=100 if defaults else None,
                   help="devices in the largest round" + (" (100)" if defaults else ""))


def _broker_init(args: argparse.Namespace) -> int:
    from genofed.broker.deploy import Sizing, init_broker

    hosts = tuple(dict.fromkeys(["localhost", "127.0.0.1", *args.host]))
    setup = init_broker(args.out, args.federation, args.devices, port=args.port,
                        bind=args.bind, hosts=hosts,
                        sizing=Sizing(args.max_params, args.max_devices))
    print(f"{setup.root}: CA, server, aggregator and admin identities"
          + (f", {len(setup.devices)} device keys (made here: demo and tests)"
             if setup.devices else "")
          + f"; packets up to {setup.sizing.largest_message} bytes; run "
            f"`mosquitto -c {setup.root / 'mosquitto.conf'}`")
    return 0


def _broker_sign_device(args: argparse.Namespace) -> int:
    import shutil

    from genofed.broker.deploy import sign_device

    try:
        request = args.csr.read_bytes()
    except OSError as exc:
        raise LocalInputError(f"{args.csr}: {exc.strerror}") from None
    try:
        device, cert = sign_device(args.dir, request, args.device)
    except LocalInputError as exc:
        raise LocalInputError(f"{args.csr}: {exc}") from None
    if args.out:
        shutil.copyfile(cert, args.out)
    print(f"signed {device}: {args.out or cert} (give the device it and {args.dir / 'ca.crt'})")
    return 0


def _broker_revoke_device(args: argparse.Namespace) -> int:
    from genofed.broker.deploy import revoke_device

    if args.aggregator_config:  # fail on a bad config before changing anything
        from genofed.aggregator.config import load_aggregator_config

        agg = load_aggregator_config(args.aggregator_config)
    serial = revoke_device(args.dir, args.device)
    print(f"revoked {args.device} (certificate serial {serial:x}): CRL and ACL rewritten; "
          f"the broker applies them when reloaded: `systemctl reload mosquitto` or "
          f"`kill -HUP <mosquitto pid>`")
    if args.aggregator_config:
        from genofed.aggregator.state import unenroll_device

        unenroll_device(agg.state_dir, args.device, agg.store.url)
        print(f"un-enrolled {args.device} from the aggregator")
    else:
        print(f"un-enroll it from the aggregator too: `genofed aggregator unenroll --config "
              f"FILE --device {args.device}`")
    return 0


def _broker_add_device(args: argparse.Namespace) -> int:
    from genofed.broker.deploy import enroll

    print(f"enrolled {args.device}: {enroll(args.dir, args.device)}")
    return 0


def _broker_configure(args: argparse.Namespace) -> int:
    from genofed.broker.deploy import Sizing, configure, sizing_of

    old = sizing_of(args.dir)
    new = Sizing(args.max_params or old.max_params, args.max_devices or old.max_devices)
    conf = configure(args.dir, new)
    print(f"{conf} rewritten: packets up to {new.largest_message} bytes; reload the broker "
          f"(`systemctl reload mosquitto`) for the bounds, restart it for anything else")
    return 0
