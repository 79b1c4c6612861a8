"""Rounds of 100, 300 and 1,000 one-genome devices over the real deployment (`genofed.fleet`).

Each size is a fresh deployment: Mosquitto with TLS, client certificates and the ACL, the
real aggregator process (`genofed aggregator run`, SQLite store), twice as many devices
enrolled as online, every online device picked, 5% of them dropping out at a stage drawn
uniformly (before training, before the advertisement, before each answer). The devices run
in `processes` fleet processes (`fleet/worker.py`), each with one onnxruntime session.

Per size: the aggregator's per-stage seconds (its journal) and the fleet's (first request to
last answer), the round's wall seconds (the journal; a stage in which a device dropped out
waits for its deadline, `STAGE_TIMEOUT_S`, unless every device it awaits is offline:
the fleet's aggregator runs with `close_on_offline`), the round's active seconds (the stages less
their wait for dropouts' deadlines), the aggregator's CPU seconds and peak RSS, the broker's
CPU seconds, bytes up and down per device. SecAgg+'s k and t are sized for the 5% that drop
(`[secagg] dropout_fraction = 0.05`; SCALE_SECAGG_DROPOUT changes it).
The peer, in the same run: the server's CPU seconds of the same round on the protocol alone
(`benchmarks/secagg.py`'s in-memory driver, same n, k, t, 501 coordinates and 5% dropout):
the ratio is what the service around the protocol (MQTT, the store, message checks) costs.

`time_exponent_100_1000` is the slope of log(active seconds) on log(n); the CPU exponent
beside it is the aggregator's. `cross_device_auc_gap` is centralized minus federated test AUC
with 1,000 one-genome devices a round, at the fleet's training and codec settings, run to
convergence through the fast path of `fleet/learning.py` (a real-broker run of tens of
1,000-device rounds does not fit this machine's time); its by-ancestry AUCs are in the row
`learning`. SCALE_LEARNING=0 skips it.

    genofed bench scale        ->  benchmarks/results/scale.json
    SCALE_SIZES=30 genofed bench scale   (a quick look; SCALE_PROFILE=300 profiles n=300)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SIZES = tuple(int(s) for s in os.environ.get("SCALE_SIZES", "100,300,1000").split(","))
PROFILE = int(os.environ.get("SCALE_PROFILE", "0"))  # n at which to profile the aggregator
STAGE_TIMEOUT_S = float(os.environ.get("SCALE_STAGE_TIMEOUT", "400"))
# the peer runs every client in one process: as costly as the fleet; not run past this n
PEER_MAX = int(os.environ.get("SCALE_PEER_MAX", "300"))
DROP_RATE, SEED = 0.05, 1
# `[secagg] dropout_fraction` for the rounds: k and t sized for the 5% that drop, as the peer
# (benchmarks/secagg.py) sizes them. SCALE_SECAGG_DROPOUT=0.1 (a margin) or 0.3 (the
# aggregator's default, for federations that lose 30%) write scale_dropout<X>.json instead.
SECAGG_DROPOUT = float(os.environ.get("SCALE_SECAGG_DROPOUT", str(DROP_RATE)))
LEARNING = os.environ.get("SCALE_LEARNING", "1") != "0"


def one_size(root: Path, data: Any, n: int) -> dict[str, Any]:
    from genofed.fleet.deploy import FleetPlan, run_fleet

    plan = FleetPlan(data.x[:n], data.y[:n], enrolled=2 * n, processes=max(2, n // 300),
                     drop_rate=DROP_RATE, stage_timeout_s=STAGE_TIMEOUT_S, seed=SEED,
                     secagg_dropout=SECAGG_DROPOUT)
    res = run_fleet(root / f"n{n}", data.bundle, plan,
                    profile=root / f"agg-{n}.prof" if n == PROFILE else None)
    rec = res["journal"][-1] if res["journal"] else {}
    stages = rec.get("stage_seconds", {})
    dev = res["per_device"]
    dropped = sum(1 for d in dev.values() if d["dropped_at"] is not None)
    waited = sum(s for s in stages.values() if s >= STAGE_TIMEOUT_S - 0.5)
    fleet = res["stages"]
    # a stage closed at its deadline was active until its last answer (the fleet's view)
    active = sum(min(s, fleet.get(f"stage{i}_s", s)) if s >= STAGE_TIMEOUT_S - 0.5 else s
                 for i, s in enumerate(stages.values()))
    done = [d for d in dev.values() if d["dropped_at"] is None]
    row = {"n": n, "enrolled": 2 * n, "status": rec.get("status", "none"),
           "participants": rec.get("participants"), "dropped": dropped,
           "round_wall_s": rec.get("seconds"), "round_active_s": active,
           "deadline_wait_s": waited,
           **{f"agg_{k}_s": v for k, v in stages.items()},
           **{f"fleet_{k}": v for k, v in fleet.items()},
           "aggregator_cpu_s": res["aggregator_cpu_s"],
           "aggregator_peak_rss_mb": res["aggregator_peak_rss_mb"],
           "broker_cpu_s": res["broker_cpu_s"], "fleet_cpu_s": res["fleet_cpu_s"],
           "upload_bytes_per_device": float(np.mean([d["bytes_up"] for d in done])),
           "download_bytes_per_device": float(np.mean([d["bytes_down"] for d in done])),
           "train_ms_per_device": 1e3 * float(np.mean([d["train_s"] for d in done])),
           "connect_s": res["connect_s"], "setup_s": res["setup_s"],
           "load_average_1min": os.getloadavg()[0]}  # the machine is shared
    return row


def peer_server_s(n: int) -> float:
    """Server CPU of the same round on the protocol alone (benchmarks/secagg.py), with the
    same k and t."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from secagg import genofed_case

    return float(genofed_case(n, 501, DROP_RATE, SEED, design_dropout=SECAGG_DROPOUT)["server_s"])


def exponent(ns: list[int], ys: list[float]) -> float:
    return float(np.polyfit(np.log(ns), np.log(ys), 1)[0])


def main() -> None:
    from genofed.cli.bench import write_results
    from genofed.fleet.data import one_genome_devices

    root = Path(tempfile.mkdtemp(prefix="genofed-scale-"))
    data = one_genome_devices(root / "bundle", max(SIZES), SEED)
    rows = []
    for n in SIZES:
        row = one_size(root, data, n)
        if n <= PEER_MAX:
            row["peer_protocol_server_s"] = peer_server_s(n)
            row["aggregator_cpu_vs_protocol"] = \
                row["aggregator_cpu_s"] / row["peer_protocol_server_s"]
        rows.append(row)
        print(row, flush=True)
    ns = [r["n"] for r in rows]
    big = rows[-1]
    summary: dict[str, Any] = {
        f"round_wall_s_{big['n']}": big["round_wall_s"],
        f"round_active_s_{big['n']}": big["round_active_s"],
        f"aggregator_peak_rss_mb_{big['n']}": big["aggregator_peak_rss_mb"],
        f"upload_bytes_per_device_{big['n']}": big["upload_bytes_per_device"],
        **{f"aggregator_cpu_vs_protocol_{r['n']}": r["aggregator_cpu_vs_protocol"]
           for r in rows if "aggregator_cpu_vs_protocol" in r},
        "cross_device_auc_gap": "not run",
        "completed": all(r["status"] == "completed" for r in rows),
    }
    if len(rows) > 1:
        tag = f"{ns[0]}_{ns[-1]}"
        summary[f"time_exponent_{tag}"] = exponent(ns, [r["round_active_s"] for r in rows])
        summary[f"cpu_exponent_{tag}"] = exponent(ns, [r["aggregator_cpu_s"] for r in rows])
    if PROFILE:
        summary["profile"] = str(root / f"agg-{PROFILE}.prof")
    if LEARNING:
        from genofed.fleet.learning import Learning, learning_gap

        learned = learning_gap(Learning(per_round=max(SIZES)))
        print(learned, flush=True)
        rows.append({"n": "learning", **learned})
        summary.update(cross_device_auc_gap=learned["auc_gap"],
                       cross_device_centralized_auc=learned["centralized_auc"],
                       cross_device_federated_auc=learned["federated_auc"],
                       cross_device_rounds=learned["rounds"])
    write_results("scale" if SECAGG_DROPOUT == DROP_RATE else f"scale_dropout{SECAGG_DROPOUT}",
                  rows, summary)


if __name__ == "__main__":
    main()
