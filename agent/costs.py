"""The cost of each round on this device, measured by the daemon while it runs the round.

Per round: wall time by phase (train: local epochs; join: encoding into the ring and the
SecAgg+ keys and advertisement; protocol: from the advertisement to the last stage
answered), CPU seconds of the process, its peak RSS, bytes and messages up and down, the
temperature before and after, throttling, and energy where the device can say (RAPL's
counter; else the mean of two power readings times the round's time, labelled as such).
Appended to `state_dir/costs.jsonl`; `genofed agent cost` reports them.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genofed import atomic
from genofed.agent import sensors


def peak_rss_mb() -> float:
    """Peak resident set of this process: VmHWM, not ru_maxrss, which Linux carries across
    fork and exec (an agent started by a process holding 470 MB reported 470 MB). Elsewhere
    ru_maxrss (kilobytes; bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024 if sys.platform == "darwin" else 1024)


def costs_path(state_dir: Path) -> Path:
    return state_dir / "costs.jsonl"


@dataclass
class RoundMeter:
    """Measures one round from `start` to `finish`."""

    round: int
    root: Path = Path("/")
    throttled: Callable[[], int | None] = sensors.vcgencmd_throttled
    phases: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    messages_up: int = 0
    messages_down: int = 0

    def __post_init__(self) -> None:
        self._t0 = self._mark = time.monotonic()
        self._cpu0 = time.process_time()
        self._temp0 = sensors.temperatures(self.root)
        self._rapl0 = sensors.rapl_energy_uj(self.root)
        self._power0 = sensors.power_w(self.root)

    def phase(self, name: str) -> None:
        """End the phase `name` now (phases are consecutive)."""
        now = time.monotonic()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self._mark, 4)
        self._mark = now

    def sent(self, n: int) -> None:
        self.bytes_up += n
        self.messages_up += 1

    def received(self, n: int) -> None:
        self.bytes_down += n
        self.messages_down += 1

    def finish(self, outcome: str) -> dict[str, Any]:
        if "join" in self.phases:  # from the advertisement to the round's end
            self.phase("protocol")
        wall = time.monotonic() - self._t0
        temp1 = sensors.temperatures(self.root)
        rise = {k: round(temp1[k] - v, 2) for k, v in self._temp0.items() if k in temp1}
        energy = sensors.energy_delta_j(self._rapl0, sensors.rapl_energy_uj(self.root))
        how = "rapl" if energy is not None else None
        power1 = sensors.power_w(self.root)
        if energy is None and self._power0 and power1:
            mean = (sum(self._power0.values()) + sum(power1.values())) / 2
            energy, how = mean * wall, "estimate: mean of two power readings x wall time"
        bits = self.throttled()
        return {"round": self.round, "outcome": outcome, "at": round(time.time(), 3),
                "wall_s": round(wall, 4), "phases_s": dict(self.phases),
                "cpu_s": round(time.process_time() - self._cpu0, 4),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "messages_up": self.messages_up, "messages_down": self.messages_down,
                "temperature_c": temp1 or None, "temperature_rise_c": rise or None,
                "throttled": None if bits is None else sensors.describe_throttled(bits),
                "energy_j": None if energy is None else round(energy, 3),
                "energy_source": how}


def record(state_dir: Path, row: dict[str, Any]) -> None:
    atomic.append_line(costs_path(state_dir), json.dumps(row, sort_keys=True))


def read_costs(state_dir: Path) -> list[dict[str, Any]]:
    """Every round recorded (damaged lines skipped)."""
    try:
        lines = costs_path(state_dir).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def unreadable(root: Path = Path("/"), throttled: Callable[[], int | None] =
               sensors.vcgencmd_throttled) -> list[str]:
    """The sensors this device does not expose, in words."""
    out = []
    if not sensors.temperatures(root):
        out.append("temperature (no /sys/class/thermal zone)")
    if throttled() is None:
        out.append("throttling (no vcgencmd: not a Raspberry Pi)")
    if sensors.rapl_energy_uj(root) is None and not sensors.power_w(root):
        out.append("energy (no RAPL counter, power rail or power supply reading)")
    return out
