"""The typed exception hierarchy shared by every ttc layer.

Each error carries the process exit code the CLI uses for it (see the contracts in
DESIGN.md): 2 for bad input a user can fix, 1 for a failure at run time.
"""

from __future__ import annotations

__all__ = [
    "TTCError",
    "BadInputError",
    "CheckpointError",
    "RunFailure",
    "BackendError",
    "EndpointError",
    "InvalidUsageError",
]


class TTCError(Exception):
    """Base of every error ttc raises on purpose.

    Attributes:
        exit_code: The CLI exit status for this error.
    """

    exit_code: int = 1


class BadInputError(TTCError, ValueError):
    """Input a user can fix: an unknown name, a malformed value, an unreadable file."""

    exit_code = 2


class CheckpointError(BadInputError):
    """A model path that does not exist or is not a loadable checkpoint directory."""


class RunFailure(TTCError, RuntimeError):
    """Something failed while running: a crash, an exhausted retry loop."""

    exit_code = 1


class BackendError(RunFailure):
    """A backend could not produce completions."""


class EndpointError(BackendError):
    """An HTTP endpoint stayed unreachable or kept failing after bounded retries.

    Args:
        endpoint: The base URL that failed.
        message: What went wrong, in one line.
    """

    def __init__(self, endpoint: str, message: str):
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class InvalidUsageError(BackendError):
    """A server reported token usage that cannot be true, so it is not charged.

    Counts must be ints (not bools or floats) from 0 to 2**31 - 1: anything else is a
    broken or hostile server, and charging it would corrupt the ledger (or overflow it).

    Args:
        endpoint: The base URL whose answer carried the usage.
        field: The usage field at fault, e.g. ``completion_tokens``.
        value: The value the server sent.
    """

    def __init__(self, endpoint: str, field: str, value: object):
        shown = repr(value)
        if len(shown) > 60:  # one line, whatever the server sent
            shown = shown[:57] + "..."
        super().__init__(f"{endpoint}: server reported invalid usage: {field}={shown}")
        self.endpoint, self.field, self.value = endpoint, field, value
