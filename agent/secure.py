"""A device's part in one SecAgg+ round: its encoded update in, its protocol messages out."""

from __future__ import annotations

import hashlib

import numpy as np

from genofed.protocol.ring import RingVector
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SecAggClient, SigningIdentity, Stage
from genofed.protocol.secagg.keys import SYSTEM_ENTROPY, Entropy


class Participation:
    """The client state machine of one round, keyed to this device's roster entry."""

    def __init__(self, task: SecureTask, device: str, identity: SigningIdentity,
                 ring_input: RingVector, *, entropy: Entropy = SYSTEM_ENTROPY) -> None:
        assert task.secagg is not None
        self.round = task.round
        self.client = SecAggClient(task.secagg, task.members().index(device), identity,
                                   entropy=entropy)
        self.client.set_input(ring_input)
        self._answers: dict[bytes, bytes] = {}  # sha256 of a request: the answer sent
        self._advert: bytes | None = None

    def advertise(self) -> bytes:
        """Stage 0: this round's public keys (the same bytes if asked again)."""
        if self._advert is None:
            self._advert = self.client.advertise().encode()
        return self._advert

    def advert_again(self, task: SecureTask) -> bytes | None:
        """The advertisement again when this round's task comes again while no key list has
        come back: the task is republished after the broker came back, and a broker killed
        between saves may have lost the advertisement it had acknowledged. The aggregator
        drops a copy it already has."""
        if task.round != self.round or self._advert is None or \
                self.client.stage != Stage.SHARE_KEYS:
            return None
        return self._advert

    def answer(self, payload: bytes) -> bytes:
        """Answer one server message; raises SecAggError subclasses on anything wrong. A
        request asked again (the aggregator restarted, or the broker lost the answer) gets the
        same answer again, byte for byte: the aggregator drops it if it had it."""
        key = hashlib.sha256(payload).digest()
        if key not in self._answers:
            self._answers[key] = self.client.handle_bytes(payload)
        return self._answers[key]

    @property
    def stage(self) -> Stage:
        """The stage this device answers next (DONE once its unmasking answer went out)."""
        return self.client.stage

    @property
    def done(self) -> bool:
        """True once the unmasking answer has gone out."""
        return self.client.stage >= Stage.DONE


def join(task: SecureTask, device: str, identity: SigningIdentity, trained: np.ndarray,
         rng: np.random.Generator, *, entropy: Entropy = SYSTEM_ENTROPY) -> Participation:
    """Encode this device's update (its trained coordinates, in flatten order) with the
    round's codec and join its SecAgg+ round. Its example count goes nowhere: every update
    counts equally. Raises CodecError or a SecAggError when the update does not fit the
    task (a LocalInputError either way)."""
    assert task.codec is not None
    ring = task.codec.pipeline(trained.size).encode(trained, rng)
    return Participation(task, device, identity, ring, entropy=entropy)
