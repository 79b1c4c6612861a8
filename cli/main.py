"""The `genofed` command. Subcommands import their machinery lazily, so that device commands
(`agent run`, `features`) never import torch or msprime."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genofed import __version__
from genofed.cli.agent_service import add_agent_commands
from genofed.cli.broker import add_broker_commands
from genofed.cli.logs import setup_logging
from genofed.cli.redteam import add_redteam_command
from genofed.errors import GenofedError, LocalInputError

if TYPE_CHECKING:
    pass

Handler = Callable[[argparse.Namespace], int]


EXIT_BAD_INPUT = 1  # bad local input: a person must fix a file; do not restart
EXIT_SOFTWARE = 70  # a bug (EX_SOFTWARE): the traceback is logged; a restart may help
EXIT_TEMPORARY = 75  # EX_TEMPFAIL: the state database or the like is unusable for now; restart


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run one subcommand, and exit with a status a service manager can
    act on: 0 done or stopped, 1 bad local input (one line; not worth a restart), 75 a
    temporary failure (one line; restart later), 70 a bug (traceback logged), 130 Ctrl-C.
    Network trouble never ends a daemon: it waits for the broker, saying why."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level or "warning", args.log_format)
    handler: Handler = args.handler
    try:
        return handler(args)
    except LocalInputError as exc:
        print(f"genofed: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GenofedError as exc:
        print(f"genofed: {exc}", file=sys.stderr)
        return EXIT_TEMPORARY
    except KeyboardInterrupt:
        return 130
    except Exception:
        logging.getLogger("genofed").exception("genofed %s failed with a bug; please report "
                                               "it with this log", " ".join(sys.argv[1:3]))
        return EXIT_SOFTWARE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genofed", description=__doc__)
    p.add_argument("--version", action="version", version=f"genofed {__version__}")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="default: warning (and each round's progress, for `agent run`)")
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
    from genofed.sim.cli import add_arguments

    add_arguments(s)
    s.set_defaults(handler=_simulate)

    f = sub.add_parser("features", help="read a VCF/BCF against a panel into a dosage matrix")
    f.add_argument("--panel", type=Path, required=True,
                   help="panel TSV (chrom pos ref alt id af) or a PGS Catalog scoring file")
    f.add_argument("--af-file", type=Path,
                   help="effect allele frequencies for a scoring file without "
                        "allelefrequency_effect (columns chrom pos ref alt af)")
    f.add_argument("--vcf", type=Path, required=True, help="VCF, VCF.gz (bgzip) or BCF")
    f.add_argument("--out", "-o", type=Path, required=True, help="output .npz")
    f.add_argument("--report", type=Path, help="also write the match report as JSON")
    f.add_argument("--min-match-rate", type=float, default=0.75,
                   help="refuse below this fraction of panel sites with a dosage (0.75)")
    f.add_argument("--min-gq", type=int, default=0, help="per-genotype GQ threshold, where "
                   "the file has GQ (0: off)")
    f.add_argument("--min-dp", type=int, default=0, help="per-genotype depth threshold, where "
                   "the file has depth (0: off)")
    f.add_argument("--callable", type=Path, help="BED of regions the caller could call: an "
                   "absent SNV site inside is 0/0")
    f.add_argument("--bam", type=Path, help="the sample's indexed BAM/CRAM: an absent SNV site "
                   "with enough reads and no ALT reads is 0/0")
    f.add_argument("--min-depth", type=int, default=10, help="reads needed with --bam (10)")
    f.add_argument("--reference", type=Path, help="indexed reference FASTA (CRAM, and "
                   "reference blocks for scoring-file panels)")
    f.add_argument("--drop-ambiguous", action="store_true",
                   help="drop A/T and C/G SNPs as pgsc_calc does (default: keep them, "
                        "same strand only)")
    f.add_argument("--access", choices=["auto", "region", "stream"], default="auto",
                   help="region fetches or one streaming pass (auto: the cheaper)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    f.set_defaults(handler=_features)

    e = sub.add_parser("export", help="compile a model and panel into a device bundle")
    e.add_argument("--model", choices=["logreg", "mlp", "cnn"], required=True)
    e.add_argument("--panel", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--hidden", type=int, default=32)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--proximal", action="store_true", help="FedProx term in the step graphs")
    e.add_argument("--dpsgd", action="store_true",
                   help="also a DP-SGD step graph per optimizer (per-example clipping, noise "
                        "fed by the device)")
    e.add_argument("--signing-key", type=Path,
                   help="coordinator Ed25519 key file to sign the manifest with (created, "
                        "with KEY.pub beside it, if absent)")
    e.add_argument("--init", type=Path, metavar="PARAMS.npz",
                   help="start from these weights instead of the seeded ones: named arrays, "
                        "as `genofed train -o` and `genofed aggregator model` write them")
    e.add_argument("--init-from", type=Path, metavar="SCORE",
                   help="start a logreg from a PGS Catalog scoring file's effect weights, "
                        "mapped onto the panel and the standardized input encoding")
    ep = e.add_argument_group(
        "pruning", "Unstructured: a global magnitude mask over the weight matrices (biases "
        "never), which devices keep exactly 0 and leave out of their updates. Structured: a "
        "smaller model. A coordinator re-exports from the global model (--init) every few "
        "rounds with --mask-from the bundle in use and the next --prune-step.")
    ep.add_argument("--prune", type=float, metavar="SPARSITY",
                    help="prune this fraction of the weight matrices' entries, smallest |w| "
                         "first (with --prune-step: the schedule's final fraction)")
    ep.add_argument("--prune-step", type=int, metavar="T",
                    help="re-export at step T of --prune-steps N of the cubic schedule (Zhu "
                         "and Gupta 2017): prune SPARSITY * (1 - (1 - T/N)^3); T >= N gives "
                         "SPARSITY")
    ep.add_argument("--prune-steps", type=int, metavar="N",
                    help="the schedule's length, in whatever the coordinator steps by "
                         "(rounds or re-exports)")
    ep.add_argument("--mask-from", type=Path, metavar="BUNDLE",
                    help="keep pruned what this earlier bundle of the model and panel pruned "
                         "(it counts towards SPARSITY)")
    ep.add_argument("--keep-sites", type=int, metavar="N",
                    help="keep the N sites of largest first-layer weight norm, in panel "
                         "order (logreg, mlp)")
    ep.add_argument("--keep-hidden", type=int, metavar="H",
                    help="keep the H hidden units of largest |in| * |out| (mlp)")
    e.set_defaults(handler=_export)

    t = sub.add_parser("train", help="train a bundle's model on local data, offline")
    t.add_argument("--bundle", type=Path, required=True)
    t.add_argument("--features", type=Path, required=True, help="dosages from genofed features")
    t.add_argument("--labels", type=Path, required=True, help="sample<TAB>phenotype TSV")
    t.add_argument("--trust", type=Path, help="coordinator verify key: refuse a bundle it "
                   "did not sign")
    t.add_argument("--backend", choices=["step", "ort-training"], default="step")
    t.add_argument("--optimizer", choices=["sgd", "sgd_momentum", "adam"], default="sgd")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0, help="shuffling seed")
    t.add_argument("--checkpoint", type=Path, help="resume from / save after each epoch to")
    t.add_argument("--out", "-o", type=Path, help="write the trained parameters (.npz)")
    t.set_defaults(handler=_train)

    a = sub.add_parser("agent", help="the edge daemon").add_subparsers(required=True,
                                                                       metavar="ACTION")
    ar = a.add_parser("run", help="serve federated rounds")
    ar.add_argument("--config", type=Path, required=True)
    ar.set_defaults(handler=_agent_run)
    ae = a.add_parser("enroll", help="make this device's identity key if absent and print "
                      "`<device_id> <public key hex>` for the aggregator; with TLS in [broker], "
                      "make its TLS key if absent and write a certificate request for the "
                      "broker's CA")
    ae.add_argument("--config", type=Path, required=True)
    ae.add_argument("--csr", type=Path, help="where to write the certificate request "
                    "(default: the [broker] key's path with .csr)")
    ae.set_defaults(handler=_agent_enroll)
    add_agent_commands(a)

    g = sub.add_parser("aggregator", help="the aggregator service").add_subparsers(
        required=True, metavar="ACTION")
    gr = g.add_parser("run", help="drive federated rounds")
    gr.add_argument("--config", type=Path, required=True)
    gr.set_defaults(handler=_aggregator_run)
    gi = g.add_parser("identity", help="print the aggregator's public key hex (making it)")
    gi.add_argument("--config", type=Path, required=True)
    gi.set_defaults(handler=_aggregator_identity)
    ge = g.add_parser("enroll", help="enroll a device's public key")
    ge.add_argument("--config", type=Path, required=True)
    ge.add_argument("--device", required=True)
    ge.add_argument("--key", required=True, help="the device's public key hex "
                    "(from `genofed agent enroll`)")
    ge.set_defaults(handler=_aggregator_enroll)
    gu = g.add_parser("unenroll", help="forget a device's key: never picked again, its "
                      "messages dropped (a running service reads this within a second)")
    gu.add_argument("--config", type=Path, required=True)
    gu.add_argument("--device", required=True)
    gu.set_defaults(handler=_aggregator_unenroll)
    gm = g.add_parser("model", help="write a stored global model as named arrays, e.g. for "
                      "`genofed export --init` (read-only; safe while the service runs)")
    gm.add_argument("--config", type=Path, required=True)
    gm.add_argument("--version", type=int, metavar="V",
                    help="the model version (default: the newest stored)")
    gm.add_argument("--out", "-o", type=Path, required=True, help="output .npz")
    gm.set_defaults(handler=_aggregator_model)

    add_broker_commands(sub)
    add_redteam_command(sub)

    d = sub.add_parser("demo", help="a whole federation on this machine, end to end")
    d.add_argument("--out", type=Path, default=Path("demo-out"))
    d.add_argument("--devices", type=int, default=6)
    d.add_argument("--rounds", type=int, default=8)
    d.add_argument("--model", choices=["logreg", "mlp"], default="logreg")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--local-optimizer", choices=["sgd", "sgd_momentum", "adam"], default="sgd",
                   help="the devices' optimizer, sent in each round's task")
    d.add_argument("--report", type=Path, help="write the round table and AUCs as JSON")
    d.add_argument("--dp", type=_dp_arg, nargs="?", const="default", metavar="EPSILON",
                   help="differential privacy: all the rounds spend at most EPSILON (delta "
                   "1e-5) per unit, without EPSILON the unit's default (1 per device, 2 per "
                   "record); prints the epsilon spent beside each round's AUC")
    d.add_argument("--dp-unit", choices=["record", "device"], default="record",
                   help="with --dp: record (DP-SGD in each clinic, per genome: the demo's "
                   "shape) or device (Skellam noise inside secure aggregation, per device: "
                   "the cross-device mechanism, which needs far more than 6 devices)")
    d.set_defaults(handler=_demo)

    b = sub.add_parser("bench", help="run benchmarks/NAME.py, write benchmarks/results/NAME.json")
    b.add_argument("name", nargs="?", help="benchmark name (all when omitted)")
    b.add_argument("--list", action="store_true", help="list the benchmarks")
    b.set_defaults(handler=_bench)
    return p


def _simulate(args: argparse.Namespace) -> int:
    from genofed.sim.cli import run_simulate

    print(run_simulate(args))
    return 0


def _features(args: argparse.Namespace) -> int:
    from genofed.agent.vcf import MatchRateTooLow, read_dosages, save_npz
    from genofed.cli.progress import terminal_bar
    from genofed.models.pgs import load_panel_file

    panel = load_panel_file(args.panel, af_file=args.af_file)
    bar = terminal_bar(f"reading {args.vcf.name}", enabled=not args.no_progress)
    try:
        dos = read_dosages(args.vcf, panel, min_match_rate=args.min_match_rate,
                           min_gq=args.min_gq, min_dp=args.min_dp, callable_bed=args.callable,
                           bam=args.bam, min_depth=args.min_depth, reference=args.reference,
                           drop_ambiguous=args.drop_ambiguous, access_mode=args.access,
                           progress=bar)
    except MatchRateTooLow as exc:
        if args.report:
            _write_report(args.report, exc.report)
        raise
    finally:
        if bar is not None:
            bar.close()
    save_npz(args.out, dos)
    if args.report:
        _write_report(args.report, dos.report)
    r = dos.report
    print(f"{args.vcf}: {len(dos.samples)} samples x {len(dos.site_ids)} sites, "
          f"match rate {float(r.get('match_rate', 0.0)):.3f} ({r.get('access')}) -> {args.out}")
    return 0


def _write_report(path: Path, report: dict[str, object]) -> None:
    import json

    try:
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        raise LocalInputError(f"{path}: cannot write the report: {exc}") from None


def _export(args: argparse.Namespace) -> int:
    from genofed.export.request import ExportRequest
    from genofed.models import signing

    request = ExportRequest(
        model=args.model, panel=args.panel, out=args.out, hidden=args.hidden, seed=args.seed,
        proximal=args.proximal, init=args.init, prune=args.prune, prune_step=args.prune_step,
        prune_steps=args.prune_steps, mask_from=args.mask_from, keep_sites=args.keep_sites,
        keep_hidden=args.keep_hidden, init_from=args.init_from, dpsgd=args.dpsgd)
    key = None
    if args.signing_key is not None:
        if not args.signing_key.exists():
            key = signing.generate_signing_key()
            signing.save_signing_key(args.signing_key, key)
            signing.save_verify_key(args.signing_key.with_name(args.signing_key.name + ".pub"),
                                    key.verify_key)
            print(f"new coordinator key {args.signing_key} (give devices "
                  f"{args.signing_key.name}.pub)")
        key = signing.load_signing_key(args.signing_key)
    _, line = request.run(signing_key=key)
    print(line)
    return 0


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from genofed import atomic
    from genofed.agent.offline import load_training_data, train_epochs
    from genofed.agent.ort_training import make_trainer
    from genofed.models.manifest import load_bundle
    from genofed.models.signing import load_verify_key

    trust = load_verify_key(args.trust) if args.trust else None
    bundle = load_bundle(args.bundle, trust=trust)
    data = load_training_data(bundle, args.features, args.labels)
    trainer = make_trainer(bundle, backend=args.backend, optimizer=args.optimizer,
                           threads=args.threads)
    before = trainer.mean_loss(data.x, data.y)
    losses = train_epochs(trainer, data.x, data.y, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          checkpoint=args.checkpoint)
    after = trainer.mean_loss(data.x, data.y)
    if args.out:
        import io

        buf = io.BytesIO()
        np.savez(buf, **trainer.params)  # type: ignore[arg-type]
        atomic.write_bytes(args.out, buf.getvalue())
    print(f"{len(data.y)} samples, {len(losses)} steps ({args.backend}, {args.optimizer}): "
          f"loss {before:.4f} -> {after:.4f}" + (f"; parameters -> {args.out}" if args.out
                                                  else ""))
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _agent_run(args: argparse.Namespace) -> int:
    from genofed.cli.agent_service import run_agent

    return run_agent(args)


def _agent_enroll(args: argparse.Namespace) -> int:
    from genofed.agent.config import identity_path, load_agent_config
    from genofed.agent.tlskey import ensure_request
    from genofed.models.signing import ensure_signing_key

    cfg = load_agent_config(args.config)
    key = ensure_signing_key(identity_path(cfg))
    print(f"{cfg.device_id} {bytes(key.verify_key).hex()}")
    b = cfg.broker
    if b.key is not None and b.cert is not None:
        csr = args.csr or b.key.with_suffix(".csr")
        done = ensure_request(b.key, b.cert, csr, cfg.device_id, cfg.federation)
        if done:
            print(done)
    return 0


def _aggregator_identity(args: argparse.Namespace) -> int:
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.state import load_identity

    print(load_identity(load_aggregator_config(args.config).state_dir).public.raw.hex())
    return 0


def _aggregator_enroll(args: argparse.Namespace) -> int:
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.state import enroll_device
    from genofed.protocol.topics import check_name

    try:
        check_name("device id", args.device)
    except ValueError as exc:
        raise LocalInputError(str(exc)) from None
    cfg = load_aggregator_config(args.config)
    enroll_device(cfg.state_dir, args.device, args.key, cfg.store.url)
    print(f"enrolled {args.device}")
    return 0


def _aggregator_unenroll(args: argparse.Namespace) -> int:
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.state import unenroll_device

    cfg = load_aggregator_config(args.config)
    unenroll_device(cfg.state_dir, args.device, cfg.store.url)
    print(f"un-enrolled {args.device}")
    return 0


def _aggregator_model(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from genofed import atomic
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.state import model_arrays

    cfg = load_aggregator_config(args.config)
    try:
        version, model, arrays = model_arrays(cfg.state_dir, cfg.bundle, args.version,
                                              cfg.store.url)
    except LocalInputError as exc:
        raise LocalInputError(f"{args.config}: {exc}") from None
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic.write_bytes(args.out, buf.getvalue())
    n = sum(a.size for a in arrays.values())
    print(f"model version {version} ({model}, {n} parameters) -> {args.out}")
    return 0


def _aggregator_run(args: argparse.Namespace) -> int:
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.service import Aggregator

    Aggregator(load_aggregator_config(args.config)).run(_stop_on_signals())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from genofed.cli.demo import run_demo

    run_demo(args.out, devices=args.devices, rounds=args.rounds, model=args.model,
             seed=args.seed, report=args.report, local_optimizer=args.local_optimizer,
             dp_epsilon=demo_epsilon(args), dp_unit=args.dp_unit)
    return 0


def _dp_arg(text: str) -> float | str:
    """--dp's value: a number, or "default" (what --dp alone gives)."""
    if text == "default":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def demo_epsilon(args: argparse.Namespace) -> float | None:
    """The demo's DP target: none, the one named, or (`--dp` alone) the unit's default."""
    from genofed.protocol.privacyspec import DEFAULT_EPSILON

    return DEFAULT_EPSILON[args.dp_unit] if args.dp == "default" else args.dp


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
