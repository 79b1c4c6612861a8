"""The contract between the aggregator and the devices: every message a federation sends.

| topic                       | message                      | format                          |
| --------------------------- | ---------------------------- | ------------------------------- |
| `server/task` (retained)    | `SecureTask`                 | envelope signed by aggregator   |
| `server/model` (retained)   | `ModelRelease` (INT8)        | envelope signed by aggregator   |
| `device/<id>/inbox`         | SecAgg+ server messages      | `protocol/secagg/messages.py`   |
| `device/<id>/outbox`        | SecAgg+ client messages      | `protocol/secagg/messages.py`   |
| `device/<id>/status` (ret.) | `DeviceStatus` (JSON)        | plain; the broker's ACL vouches |

Envelope: `protocol/envelope.py` (b"GFS1", version 1). SecAgg+ messages: b"GSA2". Every
payload is size-checked before it is parsed and signature-checked before it is trusted; a
change to any format is a new magic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from genofed.errors import LocalInputError, MessageError
from genofed.protocol.envelope import open_envelope, seal
from genofed.protocol.fields import Fields
from genofed.protocol.privacyspec import PrivacySpec, PrivacySpent, check_consistent
from genofed.protocol.roundspec import CodecSpec, TrainingSpec, config_from_json, config_to_json
from genofed.protocol.secagg import IdentityKey, RoundConfig, SigningIdentity

STATES = ("open", "waiting", "finished")
# A GA4GH Data Use Ontology term in its short form (GRU, HMB, DS-CANCER, NPU, IRB, ...) or as
# its identifier (DUO:0000042).
DUO_CODE = re.compile(r"[A-Z]{2,6}(-[A-Z0-9]{1,32})?|DUO:[0-9]{7}")


def check_duo(codes: tuple[str, ...] | list[str], where: str) -> tuple[str, ...]:
    """Codes as given, each checked against DUO_CODE; duplicates refused."""
    out = tuple(str(c) for c in codes)
    bad = [c for c in out if not DUO_CODE.fullmatch(c)]
    if bad or len(set(out)) != len(out) or len(out) > 32:
        raise LocalInputError(f"{where}: DUO codes must be distinct short forms (GRU, HMB, "
                              f"DS-CANCER, ...) or DUO:0000042, at most 32; got {list(out)}")
    return out


@dataclass(frozen=True)
class DataUse:
    """What the federation's data may be used for, declared by the study in its signed task:
    a study name and GA4GH DUO codes. Devices join only what their owner consented to."""

    study: str = ""
    duo: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_duo(self.duo, "data use")

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "duo": list(self.duo)}

    @classmethod
    def from_json(cls, f: Fields) -> DataUse:
        return cls(f.text("study"), tuple(str(c) for c in f.array("duo", 32)))


@dataclass(frozen=True)
class SecureTask:
    """What devices should do now. `open`: the roster trains on `model_version` and runs the
    SecAgg+ round `secagg`; `waiting`: too few devices online; `finished`: the federation
    is done. `privacy` declares the round's differential privacy; an open task carries it
    exactly when its codec adds noise (`protocol/privacyspec.py`)."""

    TYPE: ClassVar[str] = "task"
    federation: str
    round: int
    state: str
    model_version: int
    deadline_s: float = 60.0
    training: TrainingSpec = field(default_factory=TrainingSpec)
    codec: CodecSpec | None = None
    secagg: RoundConfig | None = None
    use: DataUse = field(default_factory=DataUse)
    privacy: PrivacySpec | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise MessageError(f"task state {self.state!r} is not one of {STATES}")
        if self.state == "open":
            if self.codec is None or self.secagg is None:
                raise MessageError("an open task needs its codec and SecAgg+ configuration")
            if (self.secagg.federation, self.secagg.round) != (self.federation, self.round):
                raise MessageError("the SecAgg+ configuration is for another round")
            check_consistent(self.privacy, self.codec, self.secagg, self.training)

    def members(self) -> tuple[str, ...]:
        return tuple(p.device for p in self.secagg.roster) if self.secagg else ()

    def seal(self, identity: SigningIdentity) -> bytes:
        header: dict[str, Any] = {
            "type": self.TYPE, "federation": self.federation, "round": self.round,
            "state": self.state, "model_version": self.model_version,
            "deadline_s": self.deadline_s, "training": self.training.to_json(),
            "codec": self.codec.to_json() if self.codec else None,
            "secagg": config_to_json(self.secagg) if self.secagg else None,
            "use": self.use.to_json(),
            "privacy": self.privacy.to_json() if self.privacy else None}
        return seal(identity, header)

    @classmethod
    def open(cls, payload: bytes, aggregator: IdentityKey, federation: str) -> SecureTask:
        h, body = open_envelope(payload, aggregator, expect=cls.TYPE, federation=federation)
        if body:
            raise MessageError("a task has no body")
        try:
            f = Fields(h, "task")
            return cls(federation=f.text("federation"), round=f.integer("round"),
                       state=f.text("state"), model_version=f.integer("model_version"),
                       deadline_s=f.number("deadline_s"),
                       training=TrainingSpec.from_json(f.obj("training")),
                       codec=CodecSpec.from_json(f.obj("codec")) if f.has("codec") else None,
                       secagg=config_from_json(f.obj("secagg")) if f.has("secagg") else None,
                       use=DataUse.from_json(f.obj("use")) if f.has("use") else DataUse(),
                       privacy=PrivacySpec.from_json(f.obj("privacy"))
                       if f.has("privacy") else None)
        except (MessageError, LocalInputError) as exc:  # a field, or a spec's own check
            raise MessageError(f"bad task: {exc}") from None


@dataclass(frozen=True)
class ModelRelease:
    """A global model version as it travels: INT8 values and one float32 scale per channel,
    in manifest order (`ParamLayout.quantize` and `dequantize` in `models/layout.py`)."""

    TYPE: ClassVar[str] = "model"
    federation: str
    version: int
    panel_sha256: str
    values: np.ndarray = field(repr=False)  # int8
    scales: np.ndarray = field(repr=False)  # float32
    privacy: PrivacySpent | None = None  # what the rounds behind it spent (DP federations)

    def seal(self, identity: SigningIdentity) -> bytes:
        header = {"type": self.TYPE, "federation": self.federation, "version": self.version,
                  "panel_sha256": self.panel_sha256, "encoding": "int8-per-channel",
                  "n_values": int(self.values.size), "n_scales": int(self.scales.size),
                  "privacy": self.privacy.to_json() if self.privacy else None}
        body = np.ascontiguousarray(self.values, dtype=np.int8).tobytes() + \
            np.ascontiguousarray(self.scales, dtype="<f4").tobytes()
        return seal(identity, header, body)

    @classmethod
    def open(cls, payload: bytes, aggregator: IdentityKey, federation: str) -> ModelRelease:
        h, body = open_envelope(payload, aggregator, expect=cls.TYPE, federation=federation)
        f = Fields(h, "model release")
        nv, ns = f.integer("n_values"), f.integer("n_scales")
        if f.text("encoding") != "int8-per-channel" or len(body) != nv + 4 * ns:
            raise MessageError(f"bad model release: body of {len(body)} bytes for {nv} int8 "
                               f"values and {ns} float32 scales")
        values = np.frombuffer(body[:nv], dtype=np.int8).copy()
        scales = np.frombuffer(body[nv:], dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise MessageError("bad model release: scales must be finite and non-negative")
        return cls(federation=f.text("federation"), version=f.integer("version"),
                   panel_sha256=f.text("panel_sha256", 64), values=values, scales=scales,
                   privacy=PrivacySpent.from_json(f.obj("privacy"))
                   if f.has("privacy") else None)


@dataclass(frozen=True)
class DeviceStatus:
    """What a device says of itself on its retained status topic: `online` when it connects,
    `offline` when it leaves (its will says so when it vanishes). An empty payload clears the
    retained message and reads as `offline`. Unsigned: the broker's ACL lets only the device
    write its own status topic, and a status decides no more than whether the device may be
    asked to join a round."""

    device: str
    state: str

    MAX_BYTES: ClassVar[int] = 1024  # a status is ~50 bytes; checked before json parses it
    STATES: ClassVar[tuple[str, ...]] = ("online", "offline")

    def __post_init__(self) -> None:
        if self.state not in self.STATES:
            raise MessageError(f"device status {self.state!r} is not one of {self.STATES}")

    def encode(self) -> bytes:
        return json.dumps({"device": self.device, "state": self.state}).encode()

    @classmethod
    def decode(cls, payload: bytes, device: str) -> DeviceStatus:
        """The status `device` published on its own topic; MessageError if it is not one (too
        large, not a JSON object, another device's name, an unknown state)."""
        if not payload:
            return cls(device, "offline")
        if len(payload) > cls.MAX_BYTES:
            raise MessageError(f"status of {len(payload)} bytes, more than {cls.MAX_BYTES}")
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise MessageError(f"status is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("state"), str):
            raise MessageError("status is not an object with a state")
        if doc.get("device", device) != device:
            raise MessageError(f"status names device {doc.get('device')!r}, not {device!r}")
        return cls(device, doc["state"])
