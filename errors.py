"""The one exception type that reaches the user as a single line."""


class GenofedError(Exception):
    """Bad input or a failed precondition; the message names what is wrong and where.

    The CLI prints it as one line and exits with status 1; daemons log it and carry on.
    """
