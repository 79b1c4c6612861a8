"""Signed envelopes: what the aggregator publishes (task, model) carries its Ed25519 signature.

    b"GFS1" | header length (u32, big-endian) | header (UTF-8 JSON) | body | signature (64)

The signature covers a domain string and every byte before it. `open_envelope` checks the
size limit, then the signature, and only then parses anything, so a forged or garbage payload
costs one length comparison and one signature check. The header names the message `type` and
`federation`; the rest is the message's own. SecAgg+ messages do not travel in this envelope:
they are signed by their own format (`protocol/secagg/messages.py`), bound to the round.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from genofed.errors import MessageError
from genofed.protocol.secagg.keys import IdentityKey, Signature, SigningIdentity

# Sizes are checked before anything is parsed, so a hostile payload costs at most a length
# comparison. No message of the protocol (a model release included) comes near the limit.
# A task's header carries its round's roster, about 80 bytes a member: 256 KiB holds a
# round of 3,000 (16 KiB held no more than 200).
MAX_HEADER_BYTES = 256 * 1024
ROSTER_BYTES_PER_DEVICE = 128  # a task header's bound per member (a margin over ~80)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAGIC = b"GFS1"
_DOMAIN = b"genofed/envelope/v1\x00"
_LEN = struct.Struct(">I")
_SIG = 64


def seal(identity: SigningIdentity, header: dict[str, Any], body: bytes = b"") -> bytes:
    """Serialize and sign one message."""
    if "type" not in header or "federation" not in header:
        raise ValueError("an envelope header names its type and federation")
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    signed = MAGIC + _LEN.pack(len(raw)) + raw + body
    return signed + identity.sign(_DOMAIN + signed).raw


def open_envelope(payload: bytes, signer: IdentityKey, *, expect: str, federation: str,
                  max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict[str, Any], bytes]:
    """Verify and parse one envelope from `signer`; MessageError says what is wrong."""
    if len(payload) > max_bytes:
        raise MessageError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    start = len(MAGIC) + _LEN.size
    if len(payload) < start + _SIG or payload[:4] != MAGIC:
        raise MessageError("not a signed genofed message (bad magic)")
    signed, sig = payload[:-_SIG], payload[-_SIG:]
    if not signer.verify(_DOMAIN + signed, Signature(sig)):
        raise MessageError("bad signature: not from the aggregator this device trusts")
    (hlen,) = _LEN.unpack_from(signed, 4)
    if hlen > MAX_HEADER_BYTES or start + hlen > len(signed):
        raise MessageError(f"header length {hlen} is out of bounds")
    try:
        header = json.loads(signed[start:start + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("type") != expect:
        raise MessageError(f"expected a {expect!r} message")
    if header.get("federation") != federation:
        raise MessageError(f"message for federation {header.get('federation')!r}")
    return header, signed[start + hlen:]
