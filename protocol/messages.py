"""What every message format shares: the error a bad payload raises, and the size limits.

The messages themselves are in `protocol/schema.py` (the contract): the aggregator's signed
envelopes (`protocol/envelope.py`) and the SecAgg+ messages (`protocol/secagg/messages.py`).
Sizes are checked before anything is parsed, so a hostile payload costs at most a length
comparison.
"""

from __future__ import annotations

MAX_HEADER_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class MessageError(ValueError):
    """A payload that is not a valid message; the text says why."""
