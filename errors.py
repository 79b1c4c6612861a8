"""The one exception type that reaches the user as a single line."""

from pathlib import Path


class GenofedError(Exception):
    """Bad input or a failed precondition; the message names what is wrong and where.

    The CLI prints it as one line and exits with status 1; daemons log it and carry on.
    """


def read_user_text(path: Path, what: str) -> str:
    """Read a text file a user pointed us at; failures become one GenofedError naming it."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise GenofedError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GenofedError(f"{path}: cannot read {what}: {exc}") from None
