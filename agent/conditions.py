"""The conditions under which the owner lets the device take part, and the check (no I/O).

    [conditions]
    hours = "22:00-06:30"        # local time; a window may wrap midnight; empty: any time
    max_temperature_c = 70.0     # the hottest thermal zone (a Pi's cpu-thermal, a Jetson's)
    max_load = 2.0               # 1-minute load average
    pause_when_throttled = true  # a Pi's `vcgencmd get_throttled` bits 0-3 (now)

A device outside its conditions announces itself offline, so the aggregator does not pick it
(it would otherwise be picked and drop out), and says why in its status; it looks again every
`RECHECK_S`. A reading the device cannot take (no thermal zone, no vcgencmd) does not hold it
back: a condition on a sensor it lacks is reported once, in the log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from genofed.agent import sensors
from genofed.errors import LocalInputError

RECHECK_S = 30.0
THROTTLED_NOW = 0xF


def _minutes(hhmm: str) -> int:
    h, _, m = hhmm.strip().partition(":")
    value = int(h) * 60 + int(m or 0)
    if not 0 <= value <= 24 * 60:
        raise ValueError(hhmm)
    return value


@dataclass(frozen=True)
class ConditionsSection:
    hours: str = ""
    max_temperature_c: float | None = None
    max_load: float | None = None
    pause_when_throttled: bool = False

    def __post_init__(self) -> None:
        if self.hours:
            try:
                self.window()
            except ValueError:
                raise LocalInputError(f"[conditions] hours must be HH:MM-HH:MM, got "
                                      f"{self.hours!r}") from None
        if self.max_load is not None and self.max_load <= 0:
            raise LocalInputError(f"[conditions] max_load must be > 0, got {self.max_load}")

    def window(self) -> tuple[int, int]:
        """(start, end) in minutes after local midnight."""
        start, sep, end = self.hours.partition("-")
        if not sep:
            raise ValueError(self.hours)
        return _minutes(start), _minutes(end)

    @property
    def any(self) -> bool:
        return bool(self.hours) or self.max_temperature_c is not None or \
            self.max_load is not None or self.pause_when_throttled


@dataclass(frozen=True)
class Readings:
    minute: int  # local time, minutes after midnight
    temperature_c: float | None  # the hottest zone
    load: float | None
    throttled: int | None


def unmet(cond: ConditionsSection, r: Readings) -> str | None:
    """Why the device may not take part now (None: it may)."""
    if cond.hours:
        start, end = cond.window()
        inside = start <= r.minute < end if start <= end else \
            (r.minute >= start or r.minute < end)
        if not inside:
            return f"outside the hours {cond.hours}"
    if cond.max_temperature_c is not None and r.temperature_c is not None \
            and r.temperature_c > cond.max_temperature_c:
        return f"{r.temperature_c:.1f} C, above {cond.max_temperature_c:.1f} C"
    if cond.max_load is not None and r.load is not None and r.load > cond.max_load:
        return f"load {r.load:.2f}, above {cond.max_load:.2f}"
    if cond.pause_when_throttled and r.throttled is not None and r.throttled & THROTTLED_NOW:
        return "throttled: " + ", ".join(sensors.describe_throttled(r.throttled & 0xF))
    return None


def read_now(cond: ConditionsSection, root: Path = Path("/")) -> Readings:
    """Only the readings the conditions need."""
    now = time.localtime()
    temps = sensors.temperatures(root) if cond.max_temperature_c is not None else {}
    load = os.getloadavg()[0] if cond.max_load is not None else None
    bits = sensors.vcgencmd_throttled() if cond.pause_when_throttled else None
    return Readings(minute=now.tm_hour * 60 + now.tm_min,
                    temperature_c=max(temps.values()) if temps else None, load=load,
                    throttled=bits)
