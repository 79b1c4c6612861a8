"""One config loader for the CLI and the daemons: TOML tables into frozen dataclasses.

Every error names the file and the key, and says what was expected, in one line:
`agent.toml: [training] batch_size must be an integer >= 1, got 0`.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from genofed.errors import LocalInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a LocalInputError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise LocalInputError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise LocalInputError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise LocalInputError(f"{p}: cannot read config: {exc.strerror}") from None


def build(cls: type[T], table: Any, *, where: str, base: Path | None = None,
          section: str = "") -> T:
    """Make dataclass `cls` from a TOML table; relative paths resolve against `base`.

    Nested dataclass fields take sub-tables; fields with defaults may be omitted; unknown keys
    are errors (a typo must not silently fall back to a default).
    """
    prefix = f"{where}: [{section}]" if section else f"{where}:"
    if not isinstance(table, dict):
        raise LocalInputError(f"{prefix} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise LocalInputError(f"{prefix} unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise LocalInputError(f"{prefix} missing required key {name!r}")
            continue
        sub = Key(where, section, name)
        values[name] = _convert(hints[name], table[name], sub, base)
    try:
        return cls(**values)
    except LocalInputError as exc:
        raise LocalInputError(f"{prefix} {exc}") from None


@dataclasses.dataclass(frozen=True)
class Key:
    """Where a value sits: file, table and key, printed as `file: [table] key`."""

    where: str
    section: str
    name: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.section}] {self.name}" if self.section else \
            f"{self.where}: {self.name}"


def _convert(hint: Any, value: Any, key: Key, base: Path | None) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(args[0], value, key, base)
    if origin is tuple and typing.get_args(hint) == (str, Ellipsis):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LocalInputError(f"{key} must be a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        sect = f"{key.section}.{key.name}" if key.section else key.name
        return build(hint, value, where=key.where, base=base, section=sect)
    if hint is bool:
        if not isinstance(value, bool):
            raise LocalInputError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LocalInputError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LocalInputError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise LocalInputError(f"{key} must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise LocalInputError(f"{key} must be a path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() or base is None else base / p
    raise TypeError(f"config field {key} has unsupported type {hint!r}")


def load(cls: type[T], path: str | Path) -> T:
    """Load a whole config file as dataclass `cls`; relative paths resolve next to the file."""
    p = Path(path)
    return build(cls, load_toml(p), where=str(p), base=p.resolve().parent)
