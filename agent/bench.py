"""`genofed agent bench`: one whole round on this device, with its bundle and its data.

The device's own code path, timed phase by phase: read (its VCF through pysam, against the
bundle's panel), train (the step graph on onnxruntime, from the global model the agent holds
or else the bundle's weights), join (encoding the update into the ring, the round's keys and
advertisement: `agent.secure.join`), and secure aggregation (its answers to each SecAgg+
stage). The rest of the round is simulated in this process, without a broker: an aggregator
(`SecAggServer`) and `devices - 1` peers with random inputs; their work is not counted in the
device's CPU seconds, but it is in the process's peak RSS (small) and in any energy reading,
which covers the whole bench. Bytes up and down are this device's round messages, as it
would send and receive them. The device profile suffices (no torch, no broker).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from genofed.agent.config import AgentConfig
from genofed.agent.costs import RoundMeter
from genofed.agent.daemon import _trusted_key, load_local_data
from genofed.agent.ort_training import make_trainer
from genofed.agent.secure import join
from genofed.agent.service import model_path
from genofed.models.manifest import load_bundle
from genofed.protocol.codec import choose_bits
from genofed.protocol.ring import Ring
from genofed.protocol.roundspec import CodecSpec, TrainingSpec
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import (
    GraphSeed,
    Participant,
    RoundConfig,
    SecAggServer,
    SigningIdentity,
)
from genofed.protocol.secagg.client import SecAggClient
from genofed.protocol.secagg.params import choose_parameters


def bench_round(cfg: AgentConfig, *, devices: int = 6, epochs: int = 2, batch_size: int = 32,
                lr: float = 0.02, optimizer: str = "sgd", clip: float = 10.0,
                scale: float = 1e6, sensors_root: Path = Path("/")) -> dict[str, Any]:
    """Measure one round; returns the cost row (as `costs.jsonl` holds) plus the setup."""
    meter = RoundMeter(0, root=sensors_root)
    own_cpu = 0.0
    c0 = time.process_time()
    bundle = load_bundle(cfg.bundle, trust=_trusted_key(cfg))
    data = load_local_data(cfg, bundle)
    meter.phase("read")
    layout = bundle.layout
    try:
        with np.load(model_path(cfg)) as z:
            weights, version = np.asarray(z["weights"], np.float32), int(z["version"])
    except (OSError, KeyError, ValueError):
        weights, version = layout.flatten(bundle.initial_params()), None
    trainer = make_trainer(bundle, backend=cfg.training.backend, optimizer=optimizer,
                           threads=cfg.training.threads)
    trainer.set_weights(weights)
    trainer.train(data.x, data.y, epochs=epochs, batch_size=batch_size, lr=lr,
                  rng=np.random.default_rng(cfg.training.seed))
    delta = np.subtract(trainer.weights(), weights, dtype=np.float64)
    meter.phase("train")
    ids = [SigningIdentity.generate() for _ in range(devices)]
    server_id = SigningIdentity.generate()
    bits = choose_bits(devices, clip, scale)
    config = RoundConfig(cfg.federation, 0, tuple(Participant(f"dev{i}", ids[i].public)
                                                  for i in range(devices)),
                         server_id.public, choose_parameters(devices, 0.1, 0.3), Ring(bits),
                         layout.n_trained, GraphSeed(secrets.token_bytes(32)))
    task = SecureTask(cfg.federation, 0, "open", 0, deadline_s=30.0,
                      training=TrainingSpec(local_epochs=epochs, batch_size=batch_size, lr=lr,
                                            optimizer=optimizer),
                      codec=CodecSpec(clip, scale, bits, secrets.token_bytes(32)),
                      secagg=config)
    me = join(task, "dev0", ids[0], layout.trained(delta),
              np.random.default_rng(secrets.randbits(128)))
    advert = me.advertise()
    meter.phase("join")
    own_cpu += time.process_time() - c0
    meter.sent(len(advert))
    server = SecAggServer(config, server_id)
    server.receive_bytes(advert)
    rng = np.random.default_rng(1)
    peers = {i: SecAggClient(config, i, ids[i]) for i in range(1, devices)}
    for c in peers.values():
        c.set_input(rng.integers(0, 1 << bits, layout.n_trained, dtype=np.uint64))
        server.receive(c.advertise())
    protocol_s = 0.0
    while not me.done:
        out = server.advance()
        for i, msg in out.items():
            if i != 0:
                server.receive(peers[i].handle(msg))
                continue
            payload = msg.encode()
            meter.received(len(payload))
            t0, c1 = time.monotonic(), time.process_time()
            answer = me.answer(payload)
            protocol_s += time.monotonic() - t0
            own_cpu += time.process_time() - c1
            meter.sent(len(answer))
            server.receive_bytes(answer)
        if not out:
            break
    meter.phases["secure_aggregation"] = round(protocol_s, 4)
    row = meter.finish("bench: answered every stage" if me.done else "bench: incomplete")
    row.pop("round")
    row["phases_s"].pop("protocol", None)
    row["cpu_s"], row["cpu_s_process"] = round(own_cpu, 4), row["cpu_s"]
    return {"device": cfg.device_id, "model": bundle.model, "model_version": version,
            "samples": int(data.x.shape[0]), "sites": int(data.x.shape[1]),
            "parameters": layout.n_params, "devices": devices, "epochs": epochs,
            "batch_size": batch_size, "optimizer": optimizer, "backend": cfg.training.backend,
            "digest": hashlib.sha256(advert).hexdigest()[:12], **row}
