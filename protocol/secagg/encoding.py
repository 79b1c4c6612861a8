"""Canonical byte encoding for everything that is signed, encrypted or sent.

Integers are unsigned big-endian of fixed width; byte strings and text carry a u32 length
prefix; sequences carry a u32 count. One value has exactly one encoding, so signatures over
encodings bind the values themselves. `Reader` checks every length against what is left
before it slices, and `Reader.end` refuses trailing bytes.
"""

from __future__ import annotations

import struct

from genofed.protocol.secagg.errors import MalformedMessage

_U8, _U32, _U64 = struct.Struct(">B"), struct.Struct(">I"), struct.Struct(">Q")


class Writer:
    """Appends canonical fields to a growing buffer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        """Append one byte."""
        self._parts.append(_U8.pack(v))
        return self

    def u32(self, v: int) -> Writer:
        """Append an unsigned 32-bit integer."""
        self._parts.append(_U32.pack(v))
        return self

    def u64(self, v: int) -> Writer:
        """Append an unsigned 64-bit integer."""
        self._parts.append(_U64.pack(v))
        return self

    def fixed(self, b: bytes) -> Writer:
        """Append bytes whose length both sides know."""
        self._parts.append(bytes(b))
        return self

    def blob(self, b: bytes) -> Writer:
        """Append length-prefixed bytes."""
        self._parts.append(_U32.pack(len(b)))
        self._parts.append(bytes(b))
        return self

    def text(self, s: str) -> Writer:
        """Append length-prefixed UTF-8 text."""
        return self.blob(s.encode())

    def u32s(self, values: tuple[int, ...] | list[int]) -> Writer:
        """Append a count-prefixed list of u32."""
        self.u32(len(values))
        self._parts.append(struct.pack(f">{len(values)}I", *values))
        return self

    def getvalue(self) -> bytes:
        """The bytes written so far."""
        return b"".join(self._parts)


class Reader:
    """Reads canonical fields from a buffer; any overrun is a MalformedMessage."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.what = what

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._data):
            raise MalformedMessage(f"{self.what}: truncated (wanted {n} bytes at offset "
                                   f"{self._pos} of {len(self._data)})")
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        """Read one byte."""
        return int(_U8.unpack(self._take(1))[0])

    def u32(self) -> int:
        """Read an unsigned 32-bit integer."""
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        """Read an unsigned 64-bit integer."""
        return int(_U64.unpack(self._take(8))[0])

    def fixed(self, n: int) -> bytes:
        """Read `n` bytes."""
        return bytes(self._take(n))

    def view(self, n: int) -> memoryview:
        """Read `n` bytes without copying them."""
        return self._take(n)

    def blob(self, max_len: int | None = None) -> bytes:
        """Read length-prefixed bytes, at most `max_len` of them."""
        n = self.u32()
        if max_len is not None and n > max_len:
            raise MalformedMessage(f"{self.what}: field of {n} bytes exceeds {max_len}")
        return self.fixed(n)

    def text(self, max_len: int = 256) -> str:
        """Read length-prefixed UTF-8 text."""
        try:
            return self.blob(max_len).decode()
        except UnicodeDecodeError:
            raise MalformedMessage(f"{self.what}: text field is not UTF-8") from None

    def count(self, max_count: int) -> int:
        """Read a u32 element count, refusing more than `max_count`."""
        n = self.u32()
        if n > max_count:
            raise MalformedMessage(f"{self.what}: {n} elements exceed the limit of {max_count}")
        return n

    def u32s(self, max_count: int) -> tuple[int, ...]:
        """Read a count-prefixed list of u32."""
        n = self.count(max_count)
        return tuple(struct.unpack(f">{n}I", self._take(4 * n)))

    def at_end(self) -> bool:
        """Whether every byte has been read."""
        return self._pos == len(self._data)

    def end(self) -> None:
        """Refuse trailing bytes."""
        if self._pos != len(self._data):
            raise MalformedMessage(f"{self.what}: {len(self._data) - self._pos} trailing bytes")
