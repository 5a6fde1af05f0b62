"""Exceptions of the policyd client (placeholder of the pylocal branch: the pyclient branch owns
this file and its version replaces this one on merge; the names are the shared API of issue 17)."""

from __future__ import annotations

from typing import Optional


class PolicydError(Exception):
    """Base of every policyd client error; .message is the server's (or the library's) message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(PolicydError):
    """400: the request (or model) is wrong."""


class NotFound(PolicydError):
    """404: no such model, version or input."""


class Unavailable(PolicydError):
    """503: not available now; retry_after in seconds when the server said."""

    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """503/429: the queue is full or the request timed out in it."""


class Timeout(PolicydError):
    """The client-side timeout passed."""


class ConnectError(PolicydError):
    """Cannot connect to the server."""


class ServerError(PolicydError):
    """500 or another status: the server's own fault."""
