"""One fleet process: its devices' clients on one `Pump`, their round logic on one thread.

Started by `fleet/deploy.py` with multiprocessing's spawn (a fresh interpreter: the parent may
have torch loaded for the export; a device process never imports it). It connects every
device, says so on `ready`, serves deliveries until every device is done (answered every
stage, or dropped out), `stop` is set or `deadline_s` passes, and writes each device's
`Stats` as JSON to `result`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genofed.broker.pki import PkiLayout
from genofed.fleet.device import Shared, VirtualDevice
from genofed.fleet.net import Pump
from genofed.models.manifest import load_bundle
from genofed.protocol.schema import DeviceStatus
from genofed.protocol.secagg import IdentityKey, SigningIdentity
from genofed.protocol.secagg.keys import IdentitySeed

log = logging.getLogger(__name__)
LINGER_S = 2.0  # after the last device is done: its last answers' acknowledgements come back


@dataclass(frozen=True)
class WorkerSpec:
    """The devices of one process and where their federation is."""

    names: tuple[str, ...]
    seeds: tuple[bytes, ...]  # each device's Ed25519 seed
    x: np.ndarray  # [devices, sites] float32: one genome a device
    y: np.ndarray  # [devices] float32
    drops: tuple[int | None, ...]  # each device's drop point (device.DROP_POINTS) or None
    bundle: Path
    federation: str
    port: int
    pki_root: Path
    aggregator_key: bytes
    result: Path
    deadline_s: float = 600.0
    deltas: Path | None = None  # tests: every device's update (float64) saved here (npz)


def serve(spec: WorkerSpec, ready: Any, stop: Any) -> None:
    """Run the process's devices (see the module docstring); under cProfile when
    GENOFED_FLEET_PROFILE names a folder (its stats written there, one file a process)."""
    folder = os.environ.get("GENOFED_FLEET_PROFILE")
    if not folder:
        _serve(spec, ready, stop)
        return
    import cProfile

    with cProfile.Profile() as prof:
        _serve(spec, ready, stop)
    prof.dump_stats(str(Path(folder) / f"{spec.result.stem}.prof"))


def _serve(spec: WorkerSpec, ready: Any, stop: Any) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s fleet %(message)s")
    shared = Shared(load_bundle(spec.bundle), spec.federation, IdentityKey(spec.aggregator_key))
    pki, topics, pump = PkiLayout(spec.pki_root), shared.topics, Pump()
    devs: dict[str, VirtualDevice] = {}
    t0 = time.perf_counter()
    for i, name in enumerate(spec.names):
        devs[name] = VirtualDevice(name, shared, SigningIdentity(IdentitySeed(spec.seeds[i])),
                                   spec.x[i:i + 1], spec.y[i:i + 1], drop_at=spec.drops[i],
                                   seed=int(name[1:]))  # names are d<global index>
        devs[name].keep_delta = spec.deltas is not None
        ident = pki.client(name)
        status = topics.status(name)
        pump.add(name, f"genofed-{spec.federation}-{name}", "127.0.0.1", spec.port,
                 ca=pki.ca_cert, cert=ident.cert, key=ident.key,
                 subscriptions=[topics.task, topics.model, topics.inbox(name)],
                 will=(status, DeviceStatus(name, "offline").encode()),
                 birth=(status, DeviceStatus(name, "online").encode()))
        pump.poll(0)
    while len(pump.connected) < len(spec.names) and time.perf_counter() - t0 < 120:
        pump.poll(0.05)
    ready.put((len(pump.connected), time.perf_counter() - t0))
    end = time.monotonic() + spec.deadline_s
    busy = 0.0
    finished_at: float | None = None
    while not stop.is_set() and time.monotonic() < end:
        pump.poll(0.02)
        t1 = time.perf_counter()
        while pump.received:
            name, topic, payload, dup = pump.received.popleft()
            d = devs[name]
            for m in d.handle(topic, payload, dup=dup):
                pump.publish(name, d.outbox(), m)
            if d.gone:
                pump.drop(name)
            # Between two devices' work, move bytes: answers go out as they are made, and
            # keepalives flow while the process seals shares for hundreds of devices (a
            # 1,000-device round's SHARE_KEYS kept one thread busy past the keepalive).
            pump.poll(0)
        busy += time.perf_counter() - t1
        if finished_at is None and all(d.done for d in devs.values()):
            finished_at = time.monotonic()
        if finished_at is not None and time.monotonic() - finished_at > LINGER_S:
            break
    pump.close()
    if spec.deltas is not None:
        kept = {n: d.delta for n, d in devs.items() if d.delta is not None}
        np.savez(spec.deltas, **kept)  # type: ignore[arg-type]
    spec.result.write_text(json.dumps({
        "busy_s": busy, "cpu_s": time.process_time(),
        "devices": {n: asdict(d.stats) for n, d in devs.items()}}))
