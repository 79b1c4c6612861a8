"""What the aggregator does with each delivery from the broker (part of `AggregatorCore`).

A device's retained status says whether it can be asked to join a round; an outbox message
is offered to the round in flight. Everything is acknowledged once handled: a message the
round accepts is stored first (its StoreMessage comes before the Ack); anything else is
dropped and counted with a reason (`topic`, `malformed`, `oversized`, `no_round`,
`not_enrolled`, `duplicate`, `refused`). No input ends the process.
"""

from __future__ import annotations

import hashlib
import logging

from genofed.aggregator.cohort import Sidelined
from genofed.aggregator.effects import Ack, Count, Delivered, Effect, StoreMessage
from genofed.aggregator.flight import Flight
from genofed.errors import GenofedError
from genofed.protocol.envelope import MAX_MESSAGE_BYTES
from genofed.protocol.schema import DeviceStatus
from genofed.protocol.topics import Topics

log = logging.getLogger("genofed.aggregator.core")


class Deliveries:
    """The delivery rules of `AggregatorCore`, which owns the state they read and change."""

    topics: Topics
    flight: Flight | None
    enrolled: dict[str, bytes]
    online: set[str]
    sidelined: Sidelined

    def _delivered(self, ev: Delivered, out: list[Effect]) -> None:
        """A status or an outbox message; acknowledged once handled (and stored, if kept)."""
        device = self.topics.device_of(ev.topic)
        if device is not None and ev.topic == self.topics.status(device):
            self._status(device, ev.payload, out)
        elif device is None or ev.topic != self.topics.outbox(device):
            self._reject("topic", f"dropped a message on {ev.topic}: not a device outbox", out)
        else:
            self._outbox(device, ev.payload, out)
        out.append(Ack(ev.token))

    def _status(self, device: str, payload: bytes, out: list[Effect]) -> None:
        try:
            state = DeviceStatus.decode(payload, device).state
        except GenofedError as exc:
            self._reject("malformed", f"dropped a bad status message of {device}: {exc}", out)
            return
        if state == "online":
            self.online.add(device)
            self.sidelined.forget(device)  # connected again: worth another try
        else:
            self.online.discard(device)
        log.info("%s is %s", device, state)

    def _outbox(self, device: str, payload: bytes, out: list[Effect]) -> None:
        f = self.flight
        limit = MAX_MESSAGE_BYTES if f is None else f.max_bytes
        if len(payload) > limit:
            self._reject("oversized", f"dropped a message from {device}: {len(payload)} bytes, "
                         f"more than the {limit} this round's messages can take", out)
            return
        if f is None:
            self._reject("no_round", f"dropped a message from {device}: no round is open", out)
            return
        if device not in self.enrolled:  # never, or un-enrolled since (revoked) mid-round
            self._reject("not_enrolled", f"dropped a message from {device}: not enrolled", out)
            return
        stage = f.rnd.stage.name
        blamed = device in f.rnd.excluded
        why = f.rnd.receive(device, payload)
        digest = hashlib.sha256(payload).digest()
        if why and digest in f.seen:
            self._reject("duplicate", f"dropped a message from {device}: a copy of its "
                         f"{f.seen[digest]} message (redelivered after a restart, or replayed)",
                         out)
        elif why:
            self._reject("refused", f"dropped a message from {device}: {why}", out)
            if not blamed and device in f.rnd.excluded:  # the evidence, replayed on a restart
                f.seen[digest] = stage
                out.append(StoreMessage(f.task.round, stage, device, payload))
        else:
            f.seen[digest] = stage
            f.bytes_up += len(payload)
            out += [StoreMessage(f.task.round, stage, device, payload),
                    Count("accepted", stage), Count("bytes", "up", len(payload))]

    def _reject(self, reason: str, text: str, out: list[Effect]) -> None:
        out.append(Count("rejected", reason))
        log.warning("%s", text)
