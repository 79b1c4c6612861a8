"""What the device can say about its temperature, throttling and energy, read from sysfs.

Every reader takes the file-system root (tests pass a mocked tree; a Pi's PMIC or a Jetson's
INA3221 cannot exist here) and returns None where the device has no such sensor, so a cost
report can say plainly what could not be read.

- temperature: /sys/class/thermal/thermal_zone*/temp (millidegrees), by zone type (a Pi's
  `cpu-thermal`, a Jetson's `CPU-therm`, an x86 `x86_pkg_temp`);
- throttling: `vcgencmd get_throttled` on a Raspberry Pi (bits 0-3 now, 16-19 since boot);
- energy: Intel RAPL package counters (/sys/class/powercap/intel-rapl:N/energy_uj, which wrap
  at max_energy_range_uj); power: hwmon `power*_input` (microwatts: a Pi 5's PMIC driver, a
  Jetson's INA3221 `in*_input` x `curr*_input` rails), /sys/class/power_supply/*/power_now.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled",
                 3: "soft temperature limit"}


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return None


def temperatures(root: Path = Path("/")) -> dict[str, float]:
    """Degrees Celsius by thermal zone type (empty: no readable zone)."""
    out: dict[str, float] = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        t = _read_int(zone / "temp")
        if t is None:
            continue
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        out[name if name not in out else f"{name}:{zone.name}"] = t / 1000.0
    return out


def vcgencmd_throttled(run: Callable[[list[str]], str] | None = None) -> int | None:
    """The bits of `vcgencmd get_throttled` ("throttled=0x50005"), or None without it."""
    if run is None:
        if shutil.which("vcgencmd") is None:
            return None

        def run(cmd: list[str]) -> str:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=5,
                                  check=True).stdout
    try:
        out = run(["vcgencmd", "get_throttled"])
        return int(out.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def describe_throttled(bits: int) -> list[str]:
    """The throttling bits in words, now and since boot."""
    now = [w for b, w in THROTTLE_BITS.items() if bits & (1 << b)]
    past = [w for b, w in THROTTLE_BITS.items() if bits & (1 << (b + 16))]
    return [f"now: {w}" for w in now] + [f"since boot: {w}" for w in past]


def rapl_energy_uj(root: Path = Path("/")) -> tuple[int, int] | None:
    """(sum of package energy counters, their wrap range) in microjoules, or None."""
    total, span, found = 0, 0, False
    for d in sorted((root / "sys/class/powercap").glob("intel-rapl:*")):
        if d.name.count(":") != 1:  # a sub-domain (core, dram): inside its package's count
            continue
        e, r = _read_int(d / "energy_uj"), _read_int(d / "max_energy_range_uj")
        if e is None:
            continue
        total, span, found = total + e, span + (r or 0), True
    return (total, span) if found else None


def energy_delta_j(before: tuple[int, int] | None, after: tuple[int, int] | None
                   ) -> float | None:
    """Joules between two RAPL readings, one counter wrap allowed."""
    if before is None or after is None:
        return None
    d = after[0] - before[0]
    if d < 0:
        d += after[1]
    return d / 1e6


def power_w(root: Path = Path("/")) -> dict[str, float]:
    """Instantaneous power by source, in watts (empty: nothing readable)."""
    out: dict[str, float] = {}
    for hw in sorted((root / "sys/class/hwmon").glob("hwmon*")):
        try:
            name = (hw / "name").read_text().strip()
        except OSError:
            name = hw.name
        for p in sorted(hw.glob("power*_input")):
            v = _read_int(p)
            if v is not None:
                out[f"{name}/{p.name.split('_')[0]}"] = v / 1e6
        if name == "ina3221":  # rails in millivolts and milliamperes
            for vin in sorted(hw.glob("in*_input")):
                cur = _read_int(hw / vin.name.replace("in", "curr", 1))
                mv = _read_int(vin)
                if cur is not None and mv is not None:
                    out[f"ina3221/{vin.name.split('_')[0]}"] = mv * cur / 1e6
    for ps in sorted((root / "sys/class/power_supply").glob("*")):
        v = _read_int(ps / "power_now")
        if v is not None:
            out[f"power_supply/{ps.name}"] = v / 1e6
    return out
