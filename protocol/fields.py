"""Reading a message's JSON fields strictly: the type JSON gave, within bounds, or one error.

`int(x)` takes 2.9, True and "7", and raises OverflowError on 1e400 (which JSON can carry as
`Infinity`); a header the aggregator signed is still network input to the device that reads
it. Every reader here raises MessageError naming the field, and nothing else.
"""

from __future__ import annotations

import math
from typing import Any

from genofed.errors import MessageError

MAX_INT = (1 << 63) - 1


class Fields:
    """The fields of one JSON object of message `what`."""

    def __init__(self, doc: Any, what: str) -> None:
        if not isinstance(doc, dict):
            raise MessageError(f"{what}: not a JSON object")
        self.doc, self.what = doc, what

    def _get(self, key: str) -> Any:
        if key not in self.doc:
            raise MessageError(f"{self.what}: no field {key!r}")
        return self.doc[key]

    def _bad(self, key: str, want: str, value: Any) -> MessageError:
        shown = repr(value)
        return MessageError(f"{self.what}: field {key!r} must be {want}, got "
                            f"{shown[:40]}{'...' if len(shown) > 40 else ''}")

    def has(self, key: str) -> bool:
        """The field is present and not null."""
        return self.doc.get(key) is not None

    def integer(self, key: str, lo: int = 0, hi: int = MAX_INT) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self._bad(key, f"an integer in [{lo}, {hi}]", v)
        return v

    def number(self, key: str) -> float:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self._bad(key, "a finite number", v)
        return float(v)

    def text(self, key: str, max_len: int = 256) -> str:
        v = self._get(key)
        if (out := text_value(v, max_len)) is None:
            raise self._bad(key, f"a string of at most {max_len} characters", v)
        return out

    def hex(self, key: str, size: int) -> bytes:
        v = self._get(key)
        if text_value(v, 2 * size) is None:
            raise self._bad(key, f"a string of at most {2 * size} characters", v)
        if (raw := hex_value(v, size)) is None:
            raise self._bad(key, f"{size} bytes in hex", v)
        return raw

    def obj(self, key: str) -> Fields:
        return Fields(self._get(key), f"{self.what}.{key}")

    def array(self, key: str, max_len: int) -> list[Any]:
        v = self._get(key)
        if not isinstance(v, list) or len(v) > max_len:
            raise self._bad(key, f"a list of at most {max_len} items", v)
        return v


def text_value(v: Any, max_len: int) -> str | None:
    """`v` if it is a string of at most `max_len` characters, else None (`Fields.text`'s rule,
    for values that are not an object's fields, such as a roster's [device, key] pairs)."""
    return v if isinstance(v, str) and len(v) <= max_len else None


def hex_value(v: Any, size: int) -> bytes | None:
    """The `size` bytes that `v` spells in hex, else None (`Fields.hex`'s rule)."""
    if text_value(v, 2 * size) is None:
        return None
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        return None
    return raw if len(raw) == size else None
