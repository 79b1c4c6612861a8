"""An in-memory driver: one whole round between a server and its clients, for tests and benchmarks.

Every message crosses as wire bytes (encode, decode), so the byte encodings are exercised too.
`drop` names, per stage, the clients that fall silent before sending that stage's message (and
stay silent); `intercept` sees every message in transit as (stage, sender, recipient, message)
and may replace it or return None to lose it. A message the server refuses is lost (and its
refusal kept in `refused`), as the aggregator drops it; the server's `culprits` end up in the
result. Client and server seconds are measured per call.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from genofed.protocol.secagg.blame import Blame
from genofed.protocol.secagg.client import SecAggClient
from genofed.protocol.secagg.config import RoundConfig
from genofed.protocol.secagg.errors import ProtocolViolation, RoundAborted
from genofed.protocol.secagg.keys import SYSTEM_ENTROPY, Entropy, SigningIdentity
from genofed.protocol.secagg.messages import SERVER, Message, Stage, decode
from genofed.protocol.secagg.server import SecAggServer

Intercept = Callable[[Stage, int, int, Message], Message | None]


@dataclass
class RoundResult:
    """What a driven round produced, and what it cost."""

    total: np.ndarray | None  # None when the round aborted
    survivors: tuple[int, ...]
    aborted: str | None
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    upload_bytes: dict[int, int] = field(default_factory=dict)  # all stages
    masked_bytes: dict[int, int] = field(default_factory=dict)  # the MaskedInput message
    culprits: dict[int, Blame] = field(default_factory=dict)  # excluded, and why
    refused: list[tuple[int, str]] = field(default_factory=list)  # (sender, why)


def make_clients(config: RoundConfig, identities: Mapping[int, SigningIdentity], *,
                 entropy: Entropy = SYSTEM_ENTROPY) -> dict[int, SecAggClient]:
    """One client state machine per roster entry that has an identity here."""
    return {i: SecAggClient(config, i, identity, entropy=entropy)
            for i, identity in identities.items()}


def run_round(config: RoundConfig, server: SecAggServer, clients: Mapping[int, SecAggClient],
              inputs: Mapping[int, np.ndarray], *,
              drop: Mapping[Stage, Collection[int]] | None = None,
              intercept: Intercept | None = None) -> RoundResult:
    """Drive all five stages; RoundAborted from the server ends the round early."""
    drop = drop or {}
    silent: set[int] = set()
    res = RoundResult(None, (), None)
    for i, x in inputs.items():
        clients[i].set_input(x)

    def client_call(i: int, fn: Callable[[], bytes]) -> bytes:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            res.client_seconds[i] = res.client_seconds.get(i, 0.0) + time.perf_counter() - t0

    def to_server(stage: Stage, i: int, wire: bytes) -> None:
        res.upload_bytes[i] = res.upload_bytes.get(i, 0) + len(wire)
        if stage == Stage.MASKED_INPUT:
            res.masked_bytes[i] = len(wire)
        if intercept is not None:
            msg = intercept(stage, i, SERVER, decode(wire))
            if msg is None:
                return
            wire = msg.encode()
        t0 = time.perf_counter()
        try:
            server.receive_bytes(wire)
        except ProtocolViolation as exc:
            res.refused.append((i, str(exc)))
        finally:
            res.server_seconds += time.perf_counter() - t0
            res.culprits = server.culprits

    def advance() -> dict[int, bytes] | None:
        t0 = time.perf_counter()
        try:
            out = server.advance()
            return {i: m.encode() for i, m in out.items()}
        except RoundAborted as exc:
            res.aborted = str(exc)
            return None
        finally:
            res.server_seconds += time.perf_counter() - t0
            res.culprits = server.culprits  # closing a stage may blame (wrong shares revealed)

    silent |= set(drop.get(Stage.ADVERTISE_KEYS, ()))
    for i in sorted(clients):
        if i not in silent:
            to_server(Stage.ADVERTISE_KEYS, i,
                      client_call(i, functools.partial(_advertise_bytes, clients[i])))
    for stage in (Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK,
                  Stage.UNMASKING):
        outbox = advance()
        if outbox is None:
            return res
        if stage == Stage.CONSISTENCY_CHECK:
            res.survivors = server.survivors
        silent |= set(drop.get(stage, ()))
        for i, wire in sorted(outbox.items()):
            if i in silent or i not in clients:
                continue
            if intercept is not None:
                msg = intercept(stage, SERVER, i, decode(wire))
                if msg is None:
                    continue
                wire = msg.encode()
            try:
                reply = client_call(i, functools.partial(clients[i].handle_bytes, wire))
            except RoundAborted:  # the client gives up on the round: to the server, a dropout
                silent.add(i)
                continue
            to_server(stage, i, reply)
    if advance() is not None:
        res.total = server.result
    return res


def _advertise_bytes(client: SecAggClient) -> bytes:
    return client.advertise().encode()
