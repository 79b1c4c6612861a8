"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TerminalBar:
    """Callable with the fraction done (0..1); redraws at most every `interval` seconds."""

    def __init__(self, label: str, stream: TextIO, *, width: int = 30,
                 interval: float = 0.2) -> None:
        self.label, self.stream, self.width, self.interval = label, stream, width, interval
        self._last = -interval
        self._drawn = False

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and fraction < 1.0:
            return
        self._last = now
        filled = round(self.width * max(0.0, min(1.0, fraction)))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{100 * fraction:5.1f}%")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def terminal_bar(label: str, *, enabled: bool = True, stream: TextIO | None = None
                 ) -> TerminalBar | None:
    """A bar on `stream` (stderr) if it is a terminal and bars are enabled, else None."""
    out = stream if stream is not None else sys.stderr
    return TerminalBar(label, out) if enabled and out.isatty() else None
