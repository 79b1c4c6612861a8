"""A device's part in one SecAgg+ round: its encoded update in, its protocol messages out."""

from __future__ import annotations

from genofed.protocol.ring import RingVector
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SecAggClient, SigningIdentity, Stage


class Participation:
    """The client state machine of one round, keyed to this device's roster entry."""

    def __init__(self, task: SecureTask, device: str, identity: SigningIdentity,
                 ring_input: RingVector) -> None:
        assert task.secagg is not None
        self.round = task.round
        self.client = SecAggClient(task.secagg, task.members().index(device), identity)
        self.client.set_input(ring_input)

    def advertise(self) -> bytes:
        """Stage 0: this round's public keys."""
        return self.client.advertise().encode()

    def answer(self, payload: bytes) -> bytes:
        """Answer one server message; raises SecAggError subclasses on anything wrong."""
        return self.client.handle_bytes(payload)

    @property
    def done(self) -> bool:
        """True once the unmasking answer has gone out."""
        return self.client.stage >= Stage.DONE
