"""`python -m genofed.fleet --devices N`: one-genome devices from the simulator, a logreg
bundle, and rounds over a fresh deployment in a temporary folder; prints what they cost."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from genofed.fleet.data import one_genome_devices
from genofed.fleet.deploy import FleetPlan, run_fleet


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m genofed.fleet")
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--enrolled", type=int, default=0, help="default: twice --devices")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--drop-rate", type=float, default=0.05)
    ap.add_argument("--stage-timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="genofed-fleet-") as tmp:
        root = Path(tmp)
        data = one_genome_devices(root / "bundle", a.devices, a.seed)
        plan = FleetPlan(data.x, data.y, enrolled=a.enrolled or 2 * a.devices,
                         processes=a.processes, drop_rate=a.drop_rate,
                         stage_timeout_s=a.stage_timeout, seed=a.seed)
        (root / "run").mkdir()
        out = run_fleet(root / "run", data.bundle, plan)
        out.pop("per_device")
        print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
