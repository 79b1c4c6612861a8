"""The broker under a flood from one device certificate, and what a crash of it loses.

Three parts, each on a real Mosquitto with the deployment's TLS configuration:

1. flood: one certificate publishes SIZE-byte payloads on its own outbox at 10 a second
   (QoS 1, `tests/support/intruder.py`) for FLOOD_S seconds while an aggregator-like client
   drains the outboxes (acknowledging each message, as the aggregator does) and a second
   device sends a small probe every 0.25 s. Reported: the broker's peak RSS, the persistence
   file's peak size, the bytes the broker wrote to disk, the probes' acknowledgement time (a
   broker busy saving shows as a slow acknowledgement), and whether the flood got through.
   Configurations: `before` (the one this replaced: saved after every change, 64 MiB
   packets, no queue bound) and `after` (`broker/deploy.py`), with the drain online and
   with it away (its session queues everything).
2. rounds: a federation of 3 agents and the aggregator runs ROUNDS rounds with no flood, a
   1 MiB flood and a flood just under the packet bound, at 100 a second; seconds per round
   from the journal, the aggregator's exit status (None: still running after ROUNDS_WAIT_S).
   The packet bound is the default sizing's (100,000 parameters, 100 devices: 0.97 MB) and,
   in the last case, this federation's own (its 121 parameters, 4 certificates).
3. crash: a device publishes a numbered QoS 1 message every 20 ms, acknowledged by the broker,
   to an aggregator that is away, and re-publishes a numbered retained message; the broker is
   killed (SIGKILL) at a random moment and restarted. The loss window is the time between the
   acknowledgement of the oldest lost message (or the newest retained value not restored) and
   the kill. KILLS repetitions.

    genofed bench broker_flood      ->  benchmarks/results/broker_flood.json
    (PARTS=flood,rounds,crash: the parts to run, all by default)
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.intruder import Flooder  # noqa: E402

from genofed.broker.deploy import Sizing, init_broker  # noqa: E402
from genofed.broker.mosquitto import LocalMosquitto  # noqa: E402
from genofed.broker.pki import PkiLayout  # noqa: E402
from genofed.cli.bench import write_results  # noqa: E402
from genofed.protocol.topics import Topics  # noqa: E402
from genofed.transport.mqtt import BrokerAddress, MqttLink  # noqa: E402

FLOOD_S, MIB = 15.0, 1 << 20
# Payloads a second: part 1 at 10 (at 100 the old configuration's file would grow by 100 MB
# a second, rewritten per message); part 2 at 100, the rate at which the old configuration
# grew a 180 MB file and stopped rounds, as the issue saw (178 MB).
BROKER_RATE, ROUNDS_RATE = 10.0, 100.0
ROUNDS, ROUNDS_WAIT_S, KILLS = 10, 120.0, 10
T = Topics("bench")
# What the configuration used to say, for the `before` rows.
BEFORE = {"autosave_on_changes": "true", "autosave_interval": "1",
          "max_packet_size": "67108864", "max_queued_bytes": None,
          "use_username_as_clientid": None}


@contextmanager
def legacy_config() -> Iterator[None]:
    """Brokers started inside run the configuration this change replaced (`BEFORE`)."""
    import genofed.broker.mosquitto as m

    real = m.write_conf

    def patched(out: Path, **kw: Any) -> Path:
        conf = real(out, **kw)
        lines = []
        for line in conf.read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key in BEFORE:
                if BEFORE[key] is None:
                    continue
                line = f"{key} {BEFORE[key]}"
            lines.append(line)
        conf.write_text("\n".join(lines) + "\n")
        return conf

    m.write_conf = patched  # type: ignore[assignment]
    try:
        yield
    finally:
        m.write_conf = real  # type: ignore[assignment]


class Broker(LocalMosquitto):
    """The deployment's broker, or with `legacy` its configuration before this change."""

    def __init__(self, root: Path, *, legacy: bool = False) -> None:
        super().__init__(root.parent / "run", secured=root)
        self.legacy = legacy

    def start(self, timeout_s: float = 10.0) -> Broker:
        with legacy_config() if self.legacy else nullcontext():
            super().start(timeout_s)
        return self



def proc_mb(broker: LocalMosquitto, field: str) -> float:
    """VmRSS (from status) or write_bytes (from io, bytes written to storage) of the
    broker's process, in MiB."""
    assert broker.proc is not None
    source = "io" if field == "write_bytes" else "status"
    for line in Path(f"/proc/{broker.proc.pid}/{source}").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / (MIB if source == "io" else 1024)
    return float("nan")


def _addr(root: Path, port: int, who: str) -> BrokerAddress:
    ident = PkiLayout(root).client(who)
    return BrokerAddress("127.0.0.1", port, ca=root / "ca.crt", cert=ident.cert, key=ident.key)


def flood_case(work: Path, *, legacy: bool, size: int, drain: bool,
               sizing: Sizing) -> dict[str, Any]:
    """Part 1, one configuration: peak RSS, peak file size, probe latencies."""
    root = work / "broker"
    init_broker(root, "bench", ["dev00", "dev01", "flood"], bind="127.0.0.1", sizing=sizing)
    db = root / "data" / "mosquitto.db"
    broker = Broker(root, legacy=legacy).start()
    agg = MqttLink("aggregator", _addr(root, broker.port, "aggregator"),
                   subscriptions=[T.all_outboxes], manual_ack=True)
    agg.start(20)
    probe = MqttLink("dev01", _addr(root, broker.port, "dev01"), subscriptions=[])
    probe.start(20)
    latencies: list[float] = []  # probe sent -> at the aggregator (online only)
    ack_times: list[float] = []  # probe sent -> acknowledged by the broker
    flood_got = [0]
    stop = threading.Event()

    def drain_loop() -> None:
        while not stop.is_set():
            try:
                r = agg.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if r.topic == T.outbox("dev01"):
                latencies.append(time.time() - float(r.payload))
            else:
                flood_got[0] += 1
            r.ack()

    if drain:
        drainer = threading.Thread(target=drain_loop, daemon=True)
        drainer.start()
    else:
        agg.stop()  # away: its session queues what the outboxes get
    flooder = Flooder(root, broker.port, "flood", T.outbox("flood"), size=size,
                      rate=BROKER_RATE).start()
    peak_rss, peak_db, sent_probes = proc_mb(broker, "VmRSS"), 0, 0
    t_end = time.monotonic() + FLOOD_S
    next_probe = time.monotonic()
    while time.monotonic() < t_end:
        peak_rss = max(peak_rss, proc_mb(broker, "VmRSS"))
        peak_db = max(peak_db, db.stat().st_size if db.exists() else 0)
        if time.monotonic() >= next_probe:
            t0 = time.monotonic()
            try:  # a stalled broker: the acknowledgement waits
                probe.publish(T.outbox("dev01"), repr(time.time()).encode(), timeout_s=30)
                sent_probes += 1
                ack_times.append(time.monotonic() - t0)
            except Exception:  # reported as a missing probe
                pass
            next_probe += 0.25
        time.sleep(0.05)
    stats = flooder.stop()
    written = proc_mb(broker, "write_bytes")
    if not drain:  # come back and collect what was queued
        agg = MqttLink("aggregator", _addr(root, broker.port, "aggregator"),
                       subscriptions=[T.all_outboxes], manual_ack=True)
        agg.start(60)
        drainer = threading.Thread(target=drain_loop, daemon=True)
        drainer.start()
    deadline = time.monotonic() + 30
    while len(latencies) < sent_probes and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    drainer.join(5)
    agg.stop()
    probe.stop()
    broker.stop()
    lat = sorted(latencies) if drain and latencies else [float("nan")]
    ack = sorted(ack_times) or [float("nan")]
    return {"config": "before" if legacy else "after", "payload_bytes": size,
            "rate_per_s": BROKER_RATE, "seconds": FLOOD_S,
            "aggregator": "online" if drain else "away",
            "max_packet_size": "64 MiB" if legacy else sizing.largest_message,
            "flood_sent": stats.sent, "flood_acked": stats.acked,
            "flood_connects": stats.connects, "flood_delivered": flood_got[0],
            "broker_peak_rss_mb": round(peak_rss, 1), "db_peak_mb": round(peak_db / MIB, 1),
            "disk_written_mb": round(written, 1), "probes_sent": sent_probes,
            "probes_delivered": len(latencies),
            "probe_ack_median_s": round(ack[len(ack) // 2], 3),
            "probe_ack_max_s": round(ack[-1], 3),
            "probe_delivery_max_s": round(lat[-1], 3)}


def rounds_case(work: Path, cohort: Path, bundle: Path, *, size: int, sizing: Sizing,
                legacy: bool = False) -> dict[str, Any]:
    """Part 2, one case: ROUNDS rounds of 3 agents, with `flood` flooding at ROUNDS_RATE (size 0:
    no flood); seconds per round from the journal, and whether the aggregator exited 0."""
    from genofed.aggregator.state import read_journal
    from genofed.cli.demo import spawn, start_broker, write_configs

    devices = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())
    names = [d.name for d in devices]
    (work / "logs").mkdir(parents=True)
    with legacy_config() if legacy else nullcontext():
        broker = start_broker(work, [*names, "flood"], sizing)
    procs = []
    flooder = None
    db = work / "broker" / "data" / "mosquitto.db"
    try:
        cfg = write_configs(work, bundle, devices, broker.port, rounds=ROUNDS,
                            min_participants=3, stage_timeout_s=10.0)
        procs = [spawn(["agent", "run", "--config", str(work / "config" / f"{n}.toml")],
                       work / "logs" / f"{n}.log") for n in names]
        agg = spawn(["aggregator", "run", "--config", str(cfg)], work / "logs" / "agg.log")
        if size:
            flooder = Flooder(work / "broker", broker.port, "flood",
                              Topics("demo").outbox("flood"), size=size,
                              rate=ROUNDS_RATE).start()
        peak_rss, peak_db, t0 = 0.0, 0, time.monotonic()
        while agg.poll() is None and time.monotonic() - t0 < ROUNDS_WAIT_S:
            peak_rss = max(peak_rss, proc_mb(broker, "VmRSS"))
            peak_db = max(peak_db, db.stat().st_size if db.exists() else 0)
            time.sleep(0.1)
        stats = flooder.stop() if flooder else None
        journal = read_journal(work / "state" / "aggregator")
    finally:
        if flooder:
            flooder.stop()
        for p in [*procs, *([agg] if "agg" in locals() else [])]:
            if p.poll() is None:
                p.kill()
        broker.stop()
    seconds = [float(r["seconds"]) for r in journal]  # type: ignore[arg-type]
    return {"config": "before" if legacy else "after", "flood_bytes": size,
            "rate_per_s": ROUNDS_RATE if size else 0,
            "max_packet_size": "64 MiB" if legacy else sizing.largest_message,
            "aggregator_exit": agg.returncode,
            "rounds": [r["status"] for r in journal],
            "seconds_per_round": [round(x, 2) for x in seconds],
            "mean_round_s": round(sum(seconds) / max(1, len(seconds)), 2),
            "flood_sent": stats.sent if stats else 0,
            "flood_connects": stats.connects if stats else 0,
            "broker_peak_rss_mb": round(peak_rss, 1), "db_peak_mb": round(peak_db / MIB, 1)}


def crash_case(work: Path, seed: int, *, legacy: bool = False) -> dict[str, Any]:
    """Part 3, one kill: how long before the kill the oldest lost acknowledgement was."""
    root = work / "broker"
    init_broker(root, "bench", ["dev00"], bind="127.0.0.1")
    broker = Broker(root, legacy=legacy).start()
    agg = MqttLink("aggregator", _addr(root, broker.port, "aggregator"),
                   subscriptions=[T.all_outboxes], manual_ack=True)
    agg.start(20)
    agg.stop()  # away: its session queues every update
    dev = MqttLink("dev00", _addr(root, broker.port, "dev00"), subscriptions=[])
    dev.start(20)
    acked: dict[int, float] = {}
    retained_acked: dict[int, float] = {}
    stop = threading.Event()

    def publish_loop() -> None:
        n = 0
        while not stop.is_set():
            try:
                dev.publish(T.outbox("dev00"), str(n).encode(), timeout_s=2)
                acked[n] = time.monotonic()
                dev.publish(T.status("dev00"), str(n).encode(), retain=True, timeout_s=2)
                retained_acked[n] = time.monotonic()
            except Exception:  # the broker is gone
                return
            n += 1
            time.sleep(0.02)

    pub = threading.Thread(target=publish_loop, daemon=True)
    pub.start()
    time.sleep(random.Random(seed).uniform(3.0, 6.0))
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    broker.proc.wait()
    stop.set()
    pub.join(5)
    dev.stop()
    broker.proc = None
    broker.start()
    agg = MqttLink("aggregator", _addr(root, broker.port, "aggregator"),
                   subscriptions=[T.all_outboxes], manual_ack=True)
    admin = MqttLink("admin", _addr(root, broker.port, "admin"),
                     subscriptions=[T.status("dev00")])
    agg.start(20)
    admin.start(20)
    got: set[int] = set()
    while True:
        try:
            r = agg.inbox.get(timeout=2)
        except queue.Empty:
            break
        got.add(int(r.payload))
        r.ack()
    try:
        kept = int(admin.inbox.get(timeout=5).payload)
    except queue.Empty:
        kept = -1
    agg.stop()
    admin.stop()
    broker.stop()
    lost = sorted(set(acked) - got)
    newest_retained = max(retained_acked) if retained_acked else -1
    return {"config": "before" if legacy else "after", "kill": seed, "acked": len(acked),
            "lost": len(lost),
            "queued_window_s": round(killed - acked[lost[0]], 3) if lost else 0.0,
            "retained_lost": newest_retained - kept,
            "retained_window_s": round(killed - retained_acked[kept + 1], 3)
            if kept + 1 in retained_acked else 0.0}


def make_federation(work: Path) -> tuple[Path, Path]:
    """The test suite's small cohort (3 devices) and a logistic-regression bundle."""
    from genofed.export.bundle import export_bundle
    from genofed.sim.cohort import simulate

    cohort = work / "cohort"
    simulate(cohort, devices=3, samples_per_device=80, variants=600, panel_size=120, seed=7,
             test_samples=120, reference_samples=200)
    return cohort, export_bundle("logreg", cohort / "panel.tsv", work / "bundle",
                                 optimizers=("sgd",), ort_training=False)


def main() -> None:
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    sizing = Sizing()
    under = sizing.largest_message - 1024  # the payload just under the packet bound
    parts = os.environ.get("PARTS", "flood,rounds,crash").split(",")
    if "flood" in parts:
        for legacy, size, drain in [(True, MIB, True), (True, MIB, False),
                                    (False, MIB, True), (False, MIB, False),
                                    (False, under, True), (False, under, False)]:
            with tempfile.TemporaryDirectory() as tmp:
                row = {"part": "flood", **flood_case(Path(tmp), legacy=legacy, size=size,
                                                     drain=drain, sizing=sizing)}
            print(row, flush=True)
            rows.append(row)
    if "rounds" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            cohort, bundle = make_federation(Path(tmp))
            cases = []
            from genofed.models.manifest import load_bundle

            own = Sizing(load_bundle(bundle).layout.n_params, 4)
            for name, size, legacy, sized in [
                    ("none", 0, True, sizing), ("1 MiB", MIB, True, sizing),
                    ("none", 0, False, sizing), ("1 MiB", MIB, False, sizing),
                    ("under bound", under, False, sizing),
                    ("under own bound", own.largest_message - 1024, False, own)]:
                with tempfile.TemporaryDirectory() as run:
                    cases.append({"part": "rounds", "flood": name,
                                  **rounds_case(Path(run), cohort, bundle, size=size,
                                                sizing=sized, legacy=legacy)})
                print(cases[-1], flush=True)
        rows += cases
        for c in cases:
            key = f"mean_round_s_{c['config']}_flood_{c['flood'].replace(' ', '_')}"
            summary[key] = c["mean_round_s"]
    if "crash" in parts:
        crashes = []
        for legacy, kills in [(True, KILLS // 2), (False, KILLS)]:
            for seed in range(kills):
                with tempfile.TemporaryDirectory() as tmp:
                    crashes.append({"part": "crash", **crash_case(Path(tmp), seed,
                                                                  legacy=legacy)})
                print(crashes[-1], flush=True)
        rows += crashes
        for cfg in ("before", "after"):
            mine = [r for r in crashes if r["config"] == cfg]
            summary[f"crash_{cfg}_queued_window_max_s"] = max(r["queued_window_s"] for r in mine)
            summary[f"crash_{cfg}_retained_window_max_s"] = max(r["retained_window_s"]
                                                                for r in mine)
            summary[f"crash_{cfg}_lost_max"] = max(r["lost"] for r in mine)
    write_results("broker_flood", rows, summary)


if __name__ == "__main__":
    main()
