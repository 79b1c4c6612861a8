"""The `genofed` command. Subcommands import their machinery lazily, so that device commands
(`agent run`, `features`) never import torch or msprime."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genofed import __version__
from genofed.cli.logs import setup_logging
from genofed.errors import GenofedError, LocalInputError

if TYPE_CHECKING:
    import numpy as np

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
    e.add_argument("--signing-key", type=Path,
                   help="coordinator Ed25519 key file to sign the manifest with (created, "
                        "with KEY.pub beside it, if absent)")
    e.add_argument("--init", type=Path, metavar="PARAMS.npz",
                   help="start from these weights instead of the seeded ones: named arrays, "
                        "as `genofed train -o` and `genofed aggregator model` write them")
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
    ae = a.add_parser("enroll", help="make this device's identity key if absent; print "
                      "`<device_id> <public key hex>` for the aggregator")
    ae.add_argument("--config", type=Path, required=True)
    ae.set_defaults(handler=_agent_enroll)

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
    gm = g.add_parser("model", help="write a stored global model as named arrays, e.g. for "
                      "`genofed export --init` (read-only; safe while the service runs)")
    gm.add_argument("--config", type=Path, required=True)
    gm.add_argument("--version", type=int, metavar="V",
                    help="the model version (default: the newest stored)")
    gm.add_argument("--out", "-o", type=Path, required=True, help="output .npz")
    gm.set_defaults(handler=_aggregator_model)

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
    d.add_argument("--local-optimizer", choices=["sgd", "sgd_momentum", "adam"], default="sgd",
                   help="the devices' optimizer, sent in each round's task")
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
    from genofed.models.manifest import load_bundle
    from genofed.models.panel import load_panel

    panel = load_panel(args.panel)
    sparsity = _export_sparsity(args)
    _check_structured(args, len(panel))
    init = _read_params(args.init, "--init") if args.init is not None else None
    if init is None and args.model == "logreg" and (sparsity or args.keep_sites):
        flag = "--prune" if sparsity else "--keep-sites"
        raise LocalInputError(f"export: {flag} needs --init for a logreg (its initial weights "
                              "are all 0, so there is no magnitude to rank)")
    earlier = None
    if args.mask_from is not None:
        try:
            earlier = load_bundle(args.mask_from)
        except LocalInputError as exc:
            raise LocalInputError(f"--mask-from: {exc}") from None
        if earlier.model != args.model or earlier.panel_sha256 != panel.sha256():
            where = "this" if earlier.panel_sha256 == panel.sha256() else "another"
            raise LocalInputError(f"export: --mask-from {args.mask_from} is a bundle of "
                                  f"{earlier.model} over {where} panel, not of {args.model} "
                                  f"over {args.panel}")

    from genofed.export.prune import export_pruned, summary
    from genofed.models import signing

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
    out = export_pruned(args.model, panel, args.out, hidden=args.hidden, seed=args.seed,
                        init=init, earlier=earlier, sparsity=sparsity,
                        keep_sites=args.keep_sites, keep_hidden=args.keep_hidden,
                        proximal=args.proximal, signing_key=key)
    target = ""
    if args.prune is not None:
        target = f" (target {sparsity:.2%}" + (
            f", step {args.prune_step} of {args.prune_steps})" if args.prune_step is not None
            else ")")
    print(f"bundle written to {out}: {summary(load_bundle(out))}{target}")
    return 0


def _export_sparsity(args: argparse.Namespace) -> float:
    """The sparsity `genofed export` prunes to: --prune, or the schedule's at --prune-step."""
    from genofed.export.prune import GradualSchedule

    stepped = (args.prune_step is not None, args.prune_steps is not None)
    if any(stepped) and not all(stepped):
        raise LocalInputError("export: --prune-step and --prune-steps go together")
    if any(stepped) and args.prune is None:
        raise LocalInputError("export: --prune-step needs --prune, the schedule's final sparsity")
    if args.prune is None:
        return 0.0
    if not 0.0 <= args.prune < 1.0:
        raise LocalInputError(f"export: --prune must be a fraction in [0, 1), got {args.prune}")
    if not all(stepped):
        return float(args.prune)
    if args.prune_steps < 1 or args.prune_step < 0:
        raise LocalInputError(f"export: --prune-steps must be >= 1 and --prune-step >= 0, got "
                              f"{args.prune_steps} and {args.prune_step}")
    return GradualSchedule(final=args.prune, end=args.prune_steps).sparsity(args.prune_step)


def _check_structured(args: argparse.Namespace, n_sites: int) -> None:
    """--keep-sites and --keep-hidden, checked against the model and panel."""
    if args.keep_sites is not None:
        if args.model == "cnn":
            raise LocalInputError("export: --keep-sites works for logreg and mlp, not cnn")
        if not 1 <= args.keep_sites <= n_sites:
            raise LocalInputError(f"export: --keep-sites must be in [1, {n_sites}] (the "
                                  f"panel's sites), got {args.keep_sites}")
    if args.keep_hidden is not None:
        if args.model != "mlp":
            raise LocalInputError(f"export: --keep-hidden works for mlp, not {args.model}")
        if not 1 <= args.keep_hidden <= args.hidden:
            raise LocalInputError(f"export: --keep-hidden must be in [1, {args.hidden}] "
                                  f"(--hidden), got {args.keep_hidden}")


def _read_params(path: Path, flag: str) -> dict[str, np.ndarray]:
    """Named float arrays from an .npz; errors name the flag and the file."""
    import zipfile

    import numpy as np

    if not path.is_file():
        raise LocalInputError(f"{flag} {path}: not found")
    if not zipfile.is_zipfile(path):
        raise LocalInputError(f"{flag} {path}: not an .npz of named arrays")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise LocalInputError(f"{flag} {path}: cannot read: {exc}") from None
    with loaded as npz:
        try:
            arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise LocalInputError(f"{flag} {path}: cannot read: {exc}") from None
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise LocalInputError(f"{flag} {path}: array {name} holds {a.dtype}, not numbers")
    return arrays


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
    from genofed.agent.config import load_agent_config
    from genofed.agent.daemon import Agent

    Agent(load_agent_config(args.config)).run(_stop_on_signals())
    return 0


def _agent_enroll(args: argparse.Namespace) -> int:
    from genofed.agent.config import identity_path, load_agent_config
    from genofed.models.signing import ensure_signing_key

    cfg = load_agent_config(args.config)
    key = ensure_signing_key(identity_path(cfg))
    print(f"{cfg.device_id} {bytes(key.verify_key).hex()}")
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
    enroll_device(load_aggregator_config(args.config).state_dir, args.device, args.key)
    print(f"enrolled {args.device}")
    return 0


def _aggregator_model(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from genofed import atomic
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.state import read_model, state_path
    from genofed.aggregator.store import Store
    from genofed.models.manifest import load_bundle, unflatten

    cfg = load_aggregator_config(args.config)
    db = state_path(cfg.state_dir)
    if not db.is_file():  # Store would make an empty one
        raise LocalInputError(f"{args.config}: no aggregator state at {db} (has the "
                              "aggregator run?)")
    bundle = load_bundle(cfg.bundle)
    if args.version is None:
        store = Store(db)
        try:
            latest = store.latest_model()
        finally:
            store.close()
        if latest is None:
            raise LocalInputError(f"{db}: no model stored yet")
        version, weights = latest
    else:
        version, weights = args.version, read_model(cfg.state_dir, args.version)
    if weights.size != bundle.n_params:
        raise LocalInputError(f"{db}: model version {version} has {weights.size} parameters, "
                              f"the bundle {cfg.bundle} {bundle.n_params}")
    buf = io.BytesIO()
    np.savez(buf, **unflatten(weights, bundle.params))  # type: ignore[arg-type]
    atomic.write_bytes(args.out, buf.getvalue())
    print(f"model version {version} ({bundle.model}, {weights.size} parameters) -> {args.out}")
    return 0


def _aggregator_run(args: argparse.Namespace) -> int:
    from genofed.aggregator.config import load_aggregator_config
    from genofed.aggregator.service import Aggregator

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
             seed=args.seed, report=args.report, local_optimizer=args.local_optimizer)
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
