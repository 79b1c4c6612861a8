"""Measuring one device from outside, the same way for genofed's agent and Flower's SuperNode:
its process tree's CPU time and resident memory, read from /proc, and its bytes on the wire,
counted by a loopback TCP proxy between the device and its server.

Why not the processes' own counters: Flower's SuperNode starts `flower-superexec`, which starts
a `flwr-clientapp` per run and never waits for it, so neither getrusage(RUSAGE_CHILDREN) nor
the parent's cutime ever sees that CPU; /proc does, while the process lives (a zombie keeps its
times). The sampler reads every `period_s`: CPU lost is at most the last period of a process
that exits unseen (a lower bound on the tree's CPU), and the tree's resident set is the sum of
its processes' VmRSS at one instant, its peak the largest such sum seen.

The proxy counts TCP payload bytes both ways (what goes on the wire minus TCP/IP headers): TLS
records for MQTT, HTTP/2 frames for gRPC. It does not read them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime in ticks) of `pid`, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB; zeros for a zombie or a process that is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


@dataclass
class TreeMeter:
    """Samples the process tree under `root` until stopped."""

    root: int
    period_s: float = 0.02
    ticks: dict[int, int] = field(default_factory=dict)  # pid -> last CPU ticks seen
    hwm_kb: dict[int, int] = field(default_factory=dict)  # pid -> last VmHWM seen
    names: dict[int, str] = field(default_factory=dict)
    peak_rss_kb: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        parent: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if d.isdigit() and (st := _stat(int(d))) is not None:
                parent[int(d)] = st[0]
        out, todo = [], [self.root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += [c for c, pp in parent.items() if pp == p]
        return out

    def sample(self) -> None:
        rss = 0
        for pid in self._tree():
            st = _stat(pid)
            if st is None:
                continue
            now_rss, hwm = _rss_kb(pid)
            with self._lock:
                self.ticks[pid] = max(self.ticks.get(pid, 0), st[1])
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), hwm)
                try:  # read again while it lives: a forked child shows its parent's until exec
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if cmd[0]:
                        self.names[pid] = " ".join(c.decode() for c in cmd[:2])
                except OSError:
                    pass
                self.names.setdefault(pid, "?")
            rss += now_rss
        with self._lock:
            self.peak_rss_kb = max(self.peak_rss_kb, rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def cpu_s(self) -> float:
        with self._lock:
            return sum(self.ticks.values()) / TICK

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_rss_kb = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class CountingProxy:
    """127.0.0.1:port -> target_port, counting payload bytes up (client to server) and down."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.up = self.down = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, upward: bool) -> None:
            try:
                while data := await r.read(65536):
                    if upward:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))

    def counts(self) -> tuple[int, int]:
        return self.up, self.down

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, pred: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.1)
