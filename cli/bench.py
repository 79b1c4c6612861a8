"""`genofed bench`: run `benchmarks/NAME.py` in its own process; results land in
`benchmarks/results/NAME.json` with the headline figures under `summary`."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import genofed
from genofed.errors import LocalInputError

BENCH_DIR = Path(genofed.__file__).resolve().parent / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"


def list_benchmarks() -> list[str]:
    """Names of the benchmarks in a source checkout."""
    if not BENCH_DIR.is_dir():
        raise LocalInputError(f"{BENCH_DIR}: benchmarks run from a source checkout of genofed")
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))


def run_benchmark(name: str) -> None:
    """Run one benchmark script; its exit status becomes ours on failure."""
    if name not in list_benchmarks():
        raise LocalInputError(f"no benchmark {name!r}; have: {', '.join(list_benchmarks())}")
    rc = subprocess.call([sys.executable, str(BENCH_DIR / f"{name}.py")])
    if rc != 0:
        raise LocalInputError(f"benchmark {name} failed with status {rc}")


def write_results(name: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """Write a benchmark's rows and summary, with the machine it ran on; print the table."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "processor": platform.machine()},
           "summary": summary, "rows": rows}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(rows)
    print("summary: " + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))
    print(f"written to {path}")
    return path


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), for benchmark workers. Not ru_maxrss: Linux
    carries that across fork and exec, so a worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def print_table(rows: list[dict[str, Any]]) -> None:
    """A plain aligned table of the rows."""
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
