"""`genofed agent ...` beyond run and enroll: what a device's owner runs.

    install-service   the systemd unit, the service user and the state folder
    status            what the daemon is doing (read from its status file; text or --json)
    predict           the owner's own score from the global model the daemon holds
    consent           show | grant [--until DATE] [--duo CODES] [--epsilon-cap EPS]
                      [--study-epsilon-cap EPS] | pause | withdraw
    audit             the audit log, its hash chain checked
    cost              each round's cost on this device, and which sensors it can read
    bench             one whole round on this device, its peers simulated (no broker)

`run` (`run_agent`) wires the daemon to the service manager: SIGTERM and SIGINT stop it,
SIGHUP reloads its config, sd_notify goes to $NOTIFY_SOCKET, and the round progress logger
shows at the default level.
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

from genofed.errors import LocalInputError


def add_agent_commands(a: Any) -> None:
    """The owner's `agent` subcommands, on the `agent` subparsers."""
    i = a.add_parser("install-service", help="install the systemd unit, create the service "
                     "user and the state folder (as root)")
    i.add_argument("--config", type=Path, required=True)
    i.add_argument("--root", type=Path, default=Path("/"), help="install into this folder "
                   "as if it were / (an image; tests)")
    i.add_argument("--user", default="genofed")
    i.add_argument("--memory-max", default="512M")
    i.add_argument("--cpu-quota", default="80%")
    i.add_argument("--dry-run", action="store_true", help="say what it would do; do nothing")
    i.add_argument("--print-unit", action="store_true", help="print the unit and exit")
    i.set_defaults(handler=_install)
    for name, fn, text in (("status", _status, "what the agent is doing"),
                           ("predict", _predict, "your own score from the global model"),
                           ("audit", _audit, "the audit log of consent and contributions, "
                                                 "its hash chain checked"),
                           ("cost", _cost, "each round's cost on this device")):
        p = a.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True)
        p.add_argument("--json", action="store_true", help="JSON instead of text")
        if name == "predict":
            p.add_argument("--sample", help="only this sample of the VCF")
        p.set_defaults(handler=fn)
    b = a.add_parser("bench", help="one whole round on this device with its bundle and data, "
                     "the aggregator and peers simulated here: time by phase, CPU, memory, "
                     "bytes, temperature, energy")
    b.add_argument("--config", type=Path, required=True)
    b.add_argument("--devices", type=int, default=6, help="devices in the round (6)")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--lr", type=float, default=0.02)
    b.add_argument("--optimizer", choices=["sgd", "sgd_momentum", "adam"], default="sgd")
    b.add_argument("--json", action="store_true", help="JSON instead of a table")
    b.set_defaults(handler=_bench)
    c = a.add_parser("consent", help="show or change your consent to take part")
    c.add_argument("action", choices=["show", "grant", "pause", "withdraw"])
    c.add_argument("--config", type=Path, required=True)
    c.add_argument("--until", help="grant: an expiry, YYYY-MM-DD (UTC midnight)")
    c.add_argument("--duo", default="", help="grant: the data uses you agree to, as GA4GH DUO "
                   "codes (GRU,HMB,DS-CANCER,...); a task declaring any other is not joined")
    c.add_argument("--epsilon-cap", metavar="EPS",
                   help="grant: the most differential-privacy epsilon this device spends in "
                   "total, or `none`; a round that would pass it is sat out (default: as "
                   "before)")
    c.add_argument("--study-epsilon-cap", metavar="EPS",
                   help="grant: the most epsilon spent in any one study, or `none`")
    c.set_defaults(handler=_consent)


def run_agent(args: argparse.Namespace) -> int:
    """`genofed agent run`: the daemon under signals, sd_notify and the round logger."""
    from genofed.agent.config import load_agent_config
    from genofed.agent.daemon import Agent
    from genofed.agent.notify import Notifier

    if getattr(args, "log_level", None) is None:  # default: warnings, and round progress
        logging.getLogger("genofed.agent.rounds").setLevel(logging.INFO)
    stop, reload = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    Agent(load_agent_config(args.config), config_path=args.config,
          notifier=Notifier()).run(stop, reload)
    return 0


def _install(args: argparse.Namespace) -> int:
    import sys

    from genofed.agent.config import load_agent_config
    from genofed.agent.install import folders_read, install_service
    from genofed.agent.unit import Limits, render_unit

    cfg = load_agent_config(args.config)
    limits = Limits(memory_max=args.memory_max, cpu_quota=args.cpu_quota)
    if args.print_unit:
        print(render_unit(python=sys.executable, config=args.config.absolute(),
                          state_dir=cfg.state_dir, reads=folders_read(cfg, args.config),
                          user=args.user, limits=limits), end="")
        return 0
    steps = install_service(cfg, args.config, root=args.root, user=args.user, limits=limits,
                            dry_run=args.dry_run)
    for s in steps:
        print(("would " if args.dry_run else "") + s)
    if not args.dry_run:
        print(f"next: `sudo -u {args.user} genofed agent enroll --config {args.config}`, "
              "then `systemctl enable --now genofed-agent`")
    return 0


def _status(args: argparse.Namespace) -> int:
    from genofed.agent.config import load_agent_config
    from genofed.agent.consent import read_consent
    from genofed.agent.status import PRIVACY, epsilon_vs_caps, privacy_line, read_status, running

    cfg = load_agent_config(args.config)
    doc = read_status(cfg.state_dir) or {"state": "never started", "privacy": PRIVACY}
    doc["running"] = running(doc)
    if doc["state"] not in ("never started", "offline", "stopped") and not doc["running"]:
        doc["state"] = f"not running (last said: {doc['state']})"
    owner = read_consent(cfg.state_dir)
    doc["consent"] = owner.describe(time.time())  # the file is the truth
    doc["privacy"] = privacy_line(cfg.state_dir)  # the ledger is
    doc["epsilon"] = epsilon_vs_caps(cfg.state_dir, owner.epsilon_cap, owner.study_epsilon_cap)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    last = doc.get("last_round")
    rows = [("state", doc["state"]), ("connected", doc.get("connected")),
            ("model version", doc.get("model_version")),
            ("current round", doc.get("current_round")),
            ("last round", None if not last else
             f"{last['round']}: {last['outcome']} ({last['bytes_up']} bytes up)"),
            ("availability", doc.get("availability")),
            ("consent", doc["consent"]), ("privacy", doc["privacy"]),
            ("epsilon vs cap", doc["epsilon"]["text"]),
            ("last error", doc.get("last_error"))]
    for k, v in rows:
        print(f"{k:>14}: {'-' if v is None else v}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from genofed.agent.config import load_agent_config
    from genofed.agent.predict import predict

    result = predict(load_agent_config(args.config), sample=args.sample)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"model version {result['model_version']} ({result['model']}), match rate "
          f"{result['match_rate']:.3f} of {result['panel_sites']} panel sites, scored by the "
          f"{'INT8 inference model' if result['scored_by'] == 'int8' else 'float model'}")
    ref = result["reference"]
    print(f"{'sample':<20} {'score':>8} {'float':>8} {'within':>14} "
          f"{'percentile' if ref else ''}")
    for r in result["scores"]:
        tol = r.get("int8_score_tolerance")
        within = "-" if tol is None else \
            f"{'yes' if r['within_tolerance'] else 'NO'} +-{tol:.4f}"
        where = "" if not ref else f"{r['percentile']:>5.1f}" + "".join(
            f" {a} {p:.1f}" for a, p in r.get("percentile_by_ancestry", {}).items())
        print(f"{r['sample']:<20} {r['score']:>8.4f} {r['score_float']:>8.4f} {within:>14} "
              f"{where}")
    for c in result["caveats"]:
        print(f"note: {c}")
    return 0


def _consent(args: argparse.Namespace) -> int:
    from genofed.agent import consent
    from genofed.agent.config import load_agent_config

    cfg = load_agent_config(args.config)
    if args.action == "show":
        print(consent.read_consent(cfg.state_dir).describe(time.time()))
        return 0
    expires = None
    if args.until:
        if args.action != "grant":
            raise LocalInputError("--until goes with grant only")
        try:
            expires = float(calendar.timegm(time.strptime(args.until, "%Y-%m-%d")))
        except ValueError:
            raise LocalInputError(f"--until {args.until}: not a date YYYY-MM-DD") from None
    duo = tuple(c.strip() for c in args.duo.split(",") if c.strip())
    if duo and args.action != "grant":
        raise LocalInputError("--duo goes with grant only")
    given = (args.epsilon_cap, args.study_epsilon_cap)
    if args.action != "grant" and given != (None, None):
        raise LocalInputError("--epsilon-cap and --study-epsilon-cap go with grant only")
    before = consent.read_consent(cfg.state_dir)
    caps = (_cap(given[0], before.epsilon_cap, "--epsilon-cap"),
            _cap(given[1], before.study_epsilon_cap, "--study-epsilon-cap"))
    if args.action != "grant":  # pausing or withdrawing keeps the data uses agreed before
        duo = before.duo
    c = consent.set_consent(cfg.state_dir, {"grant": "granted", "pause": "paused",
                                            "withdraw": "withdrawn"}[args.action],
                            expires=expires, duo=duo, epsilon_cap=caps[0],
                            study_epsilon_cap=caps[1])
    print(f"consent {c.describe(time.time())}; the running agent applies it within a second")
    return 0


def _cap(given: str | None, before: float | None, flag: str) -> float | None:
    """A cap as typed (`none` removes it), or the one recorded before if not given."""
    if given is None:
        return before
    if given.strip().lower() == "none":
        return None
    try:
        value = float(given)
    except ValueError:
        raise LocalInputError(f"{flag} {given}: not a number or `none`") from None
    if not (math.isfinite(value) and value >= 0):
        raise LocalInputError(f"{flag} {given}: must be a finite number >= 0")
    return value


def _audit(args: argparse.Namespace) -> int:
    from genofed.agent.config import load_agent_config
    from genofed.agent.consent import verify

    entries, problems = verify(load_agent_config(args.config).state_dir)
    if args.json:
        print(json.dumps({"entries": entries, "problems": problems}, indent=2))
    else:
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("at", 0)))
            what = {k: v for k, v in e.items() if k not in ("seq", "at", "kind", "prev",
                                                            "hash")}
            print(f"{e['seq']:>5} {when} {e['kind']:<12} {json.dumps(what, sort_keys=True)}")
        print(f"{len(entries)} entries; chain " + ("intact" if not problems else "BROKEN:"))
        for p in problems:
            print(f"  {p}")
    if problems:
        raise LocalInputError(f"audit log: {problems[0]}")
    return 0


def _cost(args: argparse.Namespace) -> int:
    from genofed.agent.config import load_agent_config
    from genofed.agent.costs import read_costs, unreadable

    rows = read_costs(load_agent_config(args.config).state_dir)
    missing = unreadable()
    if args.json:
        print(json.dumps({"rounds": rows, "unreadable": missing}, indent=2))
        return 0
    print(f"{'round':>5} {'wall s':>7} {'train s':>7} {'CPU s':>6} {'RSS MB':>7} "
          f"{'up B':>8} {'down B':>8} {'temp +C':>7} {'energy J':>8}  outcome")
    for r in rows:
        rise = r.get("temperature_rise_c")
        energy = r.get("energy_j")
        print(f"{r['round']:>5} {r['wall_s']:>7.2f} {r['phases_s'].get('train', 0):>7.2f} "
              f"{r['cpu_s']:>6.2f} {r['peak_rss_mb']:>7.1f} {r['bytes_up']:>8} "
              f"{r['bytes_down']:>8} "
              f"{'-' if not rise else f'{max(rise.values()):+.1f}':>7} "
              f"{'-' if energy is None else f'{energy:.1f}':>8}  {r['outcome']}")
    if not rows:
        print("no round recorded yet")
    for m in missing:
        print(f"not readable on this device: {m}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from genofed.agent.bench import bench_round
    from genofed.agent.config import load_agent_config
    from genofed.agent.costs import unreadable

    if args.devices < 3:
        raise LocalInputError(f"--devices {args.devices}: secure aggregation needs three")
    row = bench_round(load_agent_config(args.config), devices=args.devices,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer)
    row["unreadable"] = unreadable()
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    print(f"{row['device']}: {row['samples']} samples x {row['sites']} sites, {row['model']} "
          f"({row['parameters']} parameters, {row['backend']}), {row['epochs']} epochs, "
          f"round of {row['devices']} devices")
    for phase, s in row["phases_s"].items():
        print(f"  {phase:<20} {s:>9.3f} s")
    print(f"  {'wall':<20} {row['wall_s']:>9.3f} s\n  {'CPU (this device)':<20} "
          f"{row['cpu_s']:>9.3f} s\n  {'peak RSS':<20} {row['peak_rss_mb']:>9.1f} MB\n"
          f"  {'bytes up / down':<20} {row['bytes_up']:>9} / {row['bytes_down']}")
    rise = row.get("temperature_rise_c")
    print(f"  {'temperature rise':<20} "
          + ("-" if not rise else ", ".join(f"{k} {v:+.1f} C" for k, v in rise.items())))
    print(f"  {'throttling':<20} " + ("-" if row["throttled"] is None
                                       else ", ".join(row["throttled"]) or "none"))
    print(f"  {'energy':<20} " + ("-" if row["energy_j"] is None else
                                   f"{row['energy_j']:.2f} J ({row['energy_source']})"))
    for m in row["unreadable"]:
        print(f"not readable on this device: {m}")
    return 0
