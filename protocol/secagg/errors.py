"""What can go wrong in a secure-aggregation round, one exception type per kind of failure.

Each is also one of the two kinds of bad input (`genofed.errors`): a message that breaks the
protocol is a `MessageError` (dropped and counted), round parameters that cannot be safe are a
`LocalInputError`. `RoundAborted` is neither: it is how a round ends below threshold.
"""

from __future__ import annotations

from genofed.errors import GenofedError, LocalInputError, MessageError


class SecAggError(GenofedError):
    """Any failure of a secure-aggregation round."""


class ParameterError(SecAggError, LocalInputError):
    """Round parameters that are malformed or cannot be safe; the message names the value."""


class RoundAborted(SecAggError):
    """Too few participants remain for the threshold: the round ends and reveals nothing."""


class ProtocolViolation(SecAggError, MessageError):
    """A message that breaks the protocol; it is rejected and changes no state."""


class Disruption(ProtocolViolation):
    """A signed message of the current stage that provably disrupts the round: its sender is
    excluded from the round (`blame.py`); `kind` names how it disrupted."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class MalformedMessage(ProtocolViolation):
    """Bytes that do not parse as the expected message."""


class ForgedMessage(ProtocolViolation):
    """A bad signature, an unknown identity, or a ciphertext that does not authenticate."""


class WrongRound(ProtocolViolation):
    """A message of another federation, round or round configuration."""


class ReplayedMessage(ProtocolViolation):
    """A duplicate, or a message of a stage that is not the current one."""


class InconsistentRequest(ProtocolViolation):
    """A request whose answer could reveal more than the protocol allows."""
