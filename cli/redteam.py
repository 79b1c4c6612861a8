"""`genofed redteam` (coordinator profile): membership inference against simulated
federations at several epsilons, or against one real federation's stored rounds, written as
report.json and report.html (`privacy/report.py`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from genofed.errors import LocalInputError


def _epsilon(text: str) -> float | None:
    if text.lower() in ("none", "inf", "off"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an epsilon: {text!r} (a number or 'none')") \
            from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"epsilon must be positive and finite, got {text!r}")
    return v


def add_redteam_command(sub: Any) -> None:
    r = sub.add_parser("redteam", help="membership-inference attacks on simulated federations "
                       "(or a real run's stored rounds), beside the epsilon claimed; HTML report")
    r.add_argument("--out", type=Path, default=Path("redteam-out"))
    r.add_argument("--cohort", type=Path, help="a `genofed simulate` cohort folder (all its "
                   "genomes pooled, one a device); default: simulate one (--genomes, --sites)")
    r.add_argument("--genomes", type=int, default=1200)
    r.add_argument("--sites", type=int, default=2000)
    r.add_argument("--seed", type=int, default=11)
    r.add_argument("--devices", type=int, default=100, help="devices a federation")
    r.add_argument("--clinic-size", type=int, default=1, metavar="M",
                   help="genomes a device: 1 (default) is cross-device, user-level Skellam DP "
                   "per device; M > 1 is cross-silo, clinics of M genomes training with "
                   "DP-SGD, epsilon per record (as `genofed demo --dp`)")
    r.add_argument("--rounds", type=int, default=8)
    r.add_argument("--federations", type=int, default=16,
                   help="federations a pool: each attacked, the others its shadows")
    r.add_argument("--pools", type=int, default=3, help="pools of genomes (seeds)")
    r.add_argument("--epsilon", type=_epsilon, action="append",
                   help="a setting's epsilon per device (repeat; 'none' = no DP); "
                   "default: none 8 4 2 1")
    r.add_argument("--from-run", type=Path, metavar="DEMO_OUT",
                   help="attack a real federation's stored rounds: a `genofed demo` out folder "
                   "(or give --state, --bundle and --cohort)")
    r.add_argument("--state", type=Path, help="with --bundle and --cohort: an aggregator "
                   "state folder to attack")
    r.add_argument("--bundle", type=Path)
    r.set_defaults(handler=run_redteam)


def run_redteam(args: argparse.Namespace) -> int:
    from genofed.privacy.report import verdicts, write_report

    if args.from_run or args.state:
        from genofed.privacy.redteam_run import attack_run

        if args.from_run:
            run = args.from_run
            state, bundle, cohort = run / "state" / "aggregator", run / "bundle", run / "cohort"
        elif args.bundle and args.cohort:
            state, bundle, cohort = args.state, args.bundle, args.cohort
        else:
            raise LocalInputError("--state needs --bundle and --cohort")
        doc = attack_run(state, bundle, cohort)
    else:
        from genofed.privacy.redteam import Shape
        from genofed.privacy.redteam_sim import Genomes, redteam

        for name in ("genomes", "sites", "devices", "rounds", "pools", "clinic_size"):
            if getattr(args, name) < 1:
                raise LocalInputError(f"--{name.replace('_', '-')} must be at least 1")
        need = 2 * args.devices * args.clinic_size * args.pools
        if not args.cohort and args.genomes < need:
            raise LocalInputError(f"--genomes {args.genomes}: {args.pools} pools of two "
                                  f"federations of {args.devices} x {args.clinic_size} "
                                  f"genomes need {need}")
        genomes = (Genomes.from_folder(args.cohort) if args.cohort else
                   Genomes.simulate(args.genomes, args.sites, args.seed))
        shape = Shape(name="cross-device" if args.clinic_size == 1 else "cross-silo",
                      devices=args.devices, rounds=args.rounds, federations=args.federations,
                      pools=args.pools, per_device=args.clinic_size)
        try:
            doc = redteam(genomes, shape, args.epsilon or [None, 8.0, 4.0, 2.0, 1.0])
        except ValueError as exc:
            raise LocalInputError(str(exc)) from None
    js, page = write_report(doc, args.out)
    print("\n".join(verdicts(doc)))
    print(f"written {page} and {js}")
    return 0
