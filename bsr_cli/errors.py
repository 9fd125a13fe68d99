"""The one exception type that the CLI turns into a one-line error and a non-zero exit."""


class BsrError(Exception):
    """A user-facing failure: bad input, missing data, unknown name. Message is one line, no traceback."""

    exit_code = 2
