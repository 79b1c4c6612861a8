"""Message envelope and the messages of a plain (unmasked) FedAvg round.

Wire format, one MQTT payload:

    b"GFD1" | header length (u32, big-endian) | header (UTF-8 JSON object) | body (raw bytes)

The header names the message `type`, the `federation` and the `round`; an array body is
little-endian float32 whose length the header declares. Sizes are checked before anything is
parsed, so a hostile payload costs at most a length comparison. Signatures arrive with the
hardened transport (issue 6); this envelope leaves room for them in the header.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

MAGIC = b"GFD1"
MAX_HEADER_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_LEN = struct.Struct(">I")
_F32 = np.dtype("<f4")


class MessageError(ValueError):
    """A payload that is not a valid message; the text says why."""


@dataclass(frozen=True)
class Task:
    """The aggregator's retained announcement of what devices should do now."""

    TYPE: ClassVar[str] = "task"
    federation: str
    round: int
    state: str  # "open": train on model `round`; "closed": wait; "finished": federation done
    model_version: int
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    deadline_s: float = 60.0

    STATES: ClassVar[tuple[str, ...]] = ("open", "closed", "finished")

    def __post_init__(self) -> None:
        if self.state not in self.STATES:
            raise MessageError(f"task state {self.state!r} is not one of {self.STATES}")
        _check_nonneg("round", self.round)
        if self.local_epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise MessageError("task needs local_epochs >= 1, batch_size >= 1 and lr > 0")


@dataclass(frozen=True)
class GlobalModel:
    """The global parameters after `version` completed rounds, flattened in manifest order."""

    TYPE: ClassVar[str] = "model"
    federation: str
    version: int
    panel_sha256: str
    weights: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        _check_nonneg("version", self.version)


@dataclass(frozen=True)
class Update:
    """One device's weight delta for one round, with its example count (plain FedAvg)."""

    TYPE: ClassVar[str] = "update"
    federation: str
    round: int
    device: str
    n_examples: int
    mean_loss: float
    bytes_down: int
    delta: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        _check_nonneg("round", self.round)
        if self.n_examples < 1:
            raise MessageError(f"update from {self.device!r} has n_examples={self.n_examples}")
        if not np.isfinite(self.mean_loss):
            raise MessageError(f"update from {self.device!r} has a non-finite loss")


Message = Task | GlobalModel | Update
_TYPES: dict[str, type[Any]] = {t.TYPE: t for t in (Task, GlobalModel, Update)}
_ARRAY_FIELD = {"model": "weights", "update": "delta"}
M = TypeVar("M", Task, GlobalModel, Update)


def encode(msg: Message) -> bytes:
    """Serialize a message to one payload."""
    header = {k: v for k, v in asdict(msg).items() if not isinstance(v, np.ndarray)}
    header["type"] = msg.TYPE
    body = b""
    array_field = _ARRAY_FIELD.get(msg.TYPE)
    if array_field:
        arr = np.ascontiguousarray(getattr(msg, array_field), dtype=_F32)
        if arr.ndim != 1:
            raise MessageError(f"{array_field} must be one-dimensional")
        header["n"] = int(arr.size)
        body = arr.tobytes()
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(raw)) + raw + body


def decode(payload: bytes, expect: type[M], *, max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """Parse one payload as a message of type `expect`, or raise MessageError saying why."""
    if len(payload) > max_bytes:
        raise MessageError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    if len(payload) < len(MAGIC) + _LEN.size or payload[:4] != MAGIC:
        raise MessageError("not a genofed message (bad magic)")
    (hlen,) = _LEN.unpack_from(payload, 4)
    start = len(MAGIC) + _LEN.size
    if hlen > MAX_HEADER_BYTES or start + hlen > len(payload):
        raise MessageError(f"header length {hlen} is out of bounds")
    try:
        header = json.loads(payload[start:start + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.pop("type", None) != expect.TYPE:
        raise MessageError(f"expected a {expect.TYPE!r} message")
    body = payload[start + hlen:]
    array_field = _ARRAY_FIELD.get(expect.TYPE)
    if array_field:
        n = header.pop("n", None)
        if not isinstance(n, int) or n < 0 or len(body) != 4 * n:
            raise MessageError(f"body of {len(body)} bytes does not hold n={n!r} float32 values")
        arr = np.frombuffer(body, dtype=_F32).astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise MessageError(f"{array_field} holds non-finite values")
        header[array_field] = arr
    elif body:
        raise MessageError(f"unexpected body of {len(body)} bytes")
    try:
        return expect(**header)
    except TypeError as exc:
        raise MessageError(f"bad {expect.TYPE} fields: {exc}") from None


def _check_nonneg(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise MessageError(f"{name} must be a non-negative integer, got {value!r}")
