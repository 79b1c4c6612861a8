"""The errors genofed raises on purpose: one root, and one base for each kind of bad input.

- `LocalInputError`: bad local input or a failed local precondition (a config, bundle, VCF,
  state file or missing program). The CLI prints it as one line and exits with status 1; a
  daemon stops with it before it connects, so a service manager does not restart it.
- `MessageError`: bad input from the network (a payload that is malformed, forged, replayed,
  oversized or for another round). Daemons log it, count it and drop the payload; it never
  stops them.

Both say what is wrong and where. Anything else that escapes is a bug.
"""

from pathlib import Path


class GenofedError(Exception):
    """Root of every error genofed raises on purpose; the text names what is wrong and where."""


class LocalInputError(GenofedError):
    """Bad local input or a failed local precondition: one line, exit status 1."""


class MessageError(GenofedError):
    """A payload from the network that is not a valid message: logged, counted, dropped."""


def read_user_text(path: Path, what: str) -> str:
    """Read a text file a user pointed us at; failures become one LocalInputError naming it."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise LocalInputError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalInputError(f"{path}: cannot read {what}: {exc}") from None
