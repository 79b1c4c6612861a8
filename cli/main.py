"""The `genofed` command. Subcommands import their machinery lazily, so that device commands
(`agent run`, `features`) never import torch or msprime."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from genofed import __version__
from genofed.cli.logs import setup_logging
from genofed.errors import GenofedError

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run one subcommand, turn GenofedError into one line and status 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    handler: Handler = args.handler
    try:
        return handler(args)
    except GenofedError as exc:
        print(f"genofed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genofed", description=__doc__)
    p.add_argument("--version", action="version", version=f"genofed {__version__}")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="json: one object a line, for a log collector")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="draw a cohort of per-device VCFs (msprime)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--devices", type=int, default=6)
    s.add_argument("--samples-per-device", type=int, default=200)
    s.add_argument("--variants", type=int, default=2000)
    s.add_argument("--panel-size", type=int, default=500)
    s.add_argument("--test-samples", type=int, default=400)
    s.add_argument("--split", choices=["population", "iid"], default="population")
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(handler=_simulate)

    f = sub.add_parser("features", help="read a VCF/BCF against a panel into a dosage matrix")
    f.add_argument("--panel", type=Path, required=True)
    f.add_argument("--vcf", type=Path, required=True)
    f.add_argument("--out", "-o", type=Path, required=True, help="output .npz")
    f.add_argument("--report", type=Path, help="also write the match report as JSON")
    f.add_argument("--min-match-rate", type=float, default=0.0)
    f.set_defaults(handler=_features)

    e = sub.add_parser("export", help="compile a model and panel into a device bundle")
    e.add_argument("--model", choices=["logreg", "mlp"], required=True)
    e.add_argument("--panel", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--hidden", type=int, default=32)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(handler=_export)

    a = sub.add_parser("agent", help="the edge daemon").add_subparsers(required=True,
                                                                       metavar="ACTION")
    ar = a.add_parser("run", help="serve federated rounds")
    ar.add_argument("--config", type=Path, required=True)
    ar.set_defaults(handler=_agent_run)

    g = sub.add_parser("aggregator", help="the aggregator service").add_subparsers(
        required=True, metavar="ACTION")
    gr = g.add_parser("run", help="drive federated rounds")
    gr.add_argument("--config", type=Path, required=True)
    gr.set_defaults(handler=_aggregator_run)

    br = sub.add_parser("broker", help="set up the MQTT broker of a deployment").add_subparsers(
        required=True, metavar="ACTION")
    bi = br.add_parser("init", help="CA, certificates, ACL and mosquitto.conf for a federation")
    bi.add_argument("--out", type=Path, required=True)
    bi.add_argument("--devices", type=int, required=True, help="enroll dev00 .. devNN")
    bi.add_argument("--federation", default="default")
    bi.add_argument("--port", type=int, default=8883)
    bi.add_argument("--bind", default="0.0.0.0", help="listener address")
    bi.add_argument("--host", action="append", default=[],
                    help="a name or address clients use to reach the broker (repeatable)")
    bi.set_defaults(handler=_broker_init)
    ba = br.add_parser("add-device", help="enroll one more device")
    ba.add_argument("--dir", type=Path, required=True, help="the broker directory")
    ba.add_argument("--device", required=True)
    ba.set_defaults(handler=_broker_add_device)

    d = sub.add_parser("demo", help="a whole federation on this machine, end to end")
    d.add_argument("--out", type=Path, default=Path("demo-out"))
    d.add_argument("--devices", type=int, default=6)
    d.add_argument("--rounds", type=int, default=8)
    d.add_argument("--model", choices=["logreg", "mlp"], default="logreg")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--report", type=Path, help="write the round table and AUCs as JSON")
    d.set_defaults(handler=_demo)

    b = sub.add_parser("bench", help="run benchmarks/NAME.py, write benchmarks/results/NAME.json")
    b.add_argument("name", nargs="?", help="benchmark name (all when omitted)")
    b.add_argument("--list", action="store_true", help="list the benchmarks")
    b.set_defaults(handler=_bench)
    return p


def _simulate(args: argparse.Namespace) -> int:
    from genofed.sim.cohort import simulate

    info = simulate(args.out, devices=args.devices, samples_per_device=args.samples_per_device,
                    variants=args.variants, panel_size=args.panel_size, seed=args.seed,
                    test_samples=args.test_samples, split=args.split)
    print(f"{info.root}: {len(info.device_ids)} devices x {info.samples_per_device} samples, "
          f"{info.test_samples} held-out test samples, {info.variants} variants, "
          f"panel of {info.panel_size} sites ({info.panel})")
    return 0


def _features(args: argparse.Namespace) -> int:
    import json

    from genofed.agent.vcf import read_dosages, save_npz
    from genofed.models.panel import load_panel

    dos = read_dosages(args.vcf, load_panel(args.panel), min_match_rate=args.min_match_rate)
    save_npz(args.out, dos)
    if args.report:
        args.report.write_text(json.dumps(dos.report, indent=2) + "\n")
    r = dos.report
    print(f"{args.vcf}: {len(dos.samples)} samples x {len(dos.site_ids)} sites, "
          f"match rate {float(r.get('match_rate', 0.0)):.3f} -> {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from genofed.export.bundle import export_bundle

    out = export_bundle(args.model, args.panel, args.out, hidden=args.hidden, seed=args.seed)
    print(f"bundle written to {out}")
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _agent_run(args: argparse.Namespace) -> int:
    from genofed.agent.config import load_agent_config
    from genofed.agent.daemon import Agent

    Agent(load_agent_config(args.config)).run(_stop_on_signals())
    return 0


def _aggregator_run(args: argparse.Namespace) -> int:
    from genofed.broker.config import load_aggregator_config
    from genofed.broker.service import Aggregator

    Aggregator(load_aggregator_config(args.config)).run(_stop_on_signals())
    return 0


def _broker_init(args: argparse.Namespace) -> int:
    from genofed.broker.deploy import init_broker

    hosts = tuple(dict.fromkeys(["localhost", "127.0.0.1", *args.host]))
    setup = init_broker(args.out, args.federation, args.devices, port=args.port,
                        bind=args.bind, hosts=hosts)
    print(f"{setup.root}: CA, server and {len(setup.devices)} device identities; run "
          f"`mosquitto -c {setup.root / 'mosquitto.conf'}`")
    return 0


def _broker_add_device(args: argparse.Namespace) -> int:
    from genofed.broker.deploy import enroll

    print(f"enrolled {args.device}: {enroll(args.dir, args.device)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from genofed.cli.demo import run_demo

    run_demo(args.out, devices=args.devices, rounds=args.rounds, model=args.model,
             seed=args.seed, report=args.report)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from genofed.cli.bench import list_benchmarks, run_benchmark

    names = list_benchmarks()
    if args.list:
        print("\n".join(names))
        return 0
    for name in [args.name] if args.name else names:
        run_benchmark(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
