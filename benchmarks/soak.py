"""A long federation on real parts: does the memory of the aggregator and of an agent stay flat?

Three agents and the aggregator as processes on a local Mosquitto (TLS, ACL), secure rounds
one after another (500 by default). Every 25 completed rounds it reads the resident set
(VmRSS) of the aggregator and of one agent. The figure is each process's growth from round 50
(imports, sessions and caches warm) to the last; the issue's bar is 5 MB. There is no peer
to hold it against in the same run: a process is its own baseline here.

    genofed bench soak               ->  benchmarks/results/soak.json
    python benchmarks/soak.py --rounds 100
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from genofed.aggregator.state import read_journal
from genofed.cli.bench import write_results
from genofed.cli.demo import spawn_federation, start_broker, stop_federation, write_configs

STEP = 25


def rss_mb(pid: int) -> float:
    """The process's resident set now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=500)
    args = p.parse_args()
    from genofed.export.bundle import export_bundle
    from genofed.sim.cohort import simulate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate(root / "cohort", devices=3, samples_per_device=80, variants=600,
                 panel_size=120, seed=5)
        bundle = export_bundle("logreg", root / "cohort" / "panel.tsv", root / "bundle",
                               optimizers=("sgd",), ort_training=False)
        dirs = sorted(d for d in (root / "cohort" / "devices").iterdir() if d.is_dir())
        broker = start_broker(root, [d.name for d in dirs])
        procs: list[subprocess.Popen[bytes]] = []
        rows: list[dict[str, object]] = []
        t0 = time.monotonic()
        try:
            cfg = write_configs(root, bundle, dirs, broker.port, rounds=args.rounds,
                                min_participants=3)
            procs += spawn_federation(root, cfg, [d.name for d in dirs])
            state, mark = root / "state" / "aggregator", STEP
            while procs[0].poll() is None:
                done = len(read_journal(state))
                if done >= mark:
                    rows.append({"rounds": done, "aggregator_rss_mb": rss_mb(procs[0].pid),
                                 "agent_rss_mb": rss_mb(procs[1].pid),
                                 "seconds": time.monotonic() - t0})
                    print(rows[-1], flush=True)
                    mark += STEP
                time.sleep(0.5)
            if procs[0].returncode != 0:
                raise SystemExit(f"the aggregator exited with {procs[0].returncode}; see "
                                 f"{root / 'logs'}")
        finally:
            stop_federation(procs, broker)
    warm = next((r for r in rows if int(r["rounds"]) >= 50), rows[0])  # type: ignore[call-overload]
    last = rows[-1]
    summary = {"rounds": last["rounds"],
               "aggregator_growth_mb": float(last["aggregator_rss_mb"])  # type: ignore[arg-type]
               - float(warm["aggregator_rss_mb"]),  # type: ignore[arg-type]
               "agent_growth_mb": float(last["agent_rss_mb"])  # type: ignore[arg-type]
               - float(warm["agent_rss_mb"]),  # type: ignore[arg-type]
               "from_round": warm["rounds"], "seconds": last["seconds"]}
    write_results("soak", rows, summary)


if __name__ == "__main__":
    main()
