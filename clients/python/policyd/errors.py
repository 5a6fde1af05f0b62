"""The exceptions of the policyd client: one class per class of failure.

Every exception carries ``.message`` (the server's ``{"error": ...}`` text when the server
answered) and ``.status`` (the HTTP status, or the HTTP status that the gRPC code stands for;
``None`` when the server did not answer).
"""

from __future__ import annotations

from typing import Optional


class PolicydError(Exception):
    """Base class of every error the client raises."""

    def __init__(self, message: str, status: Optional[int] = None, request_id: Optional[str] = None) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.message = message
        self.status = status
        self.request_id = request_id


class InvalidArgument(PolicydError):
    """400 (or 413): the server refused the request; ``.message`` says what is wrong."""


class NotFound(PolicydError):
    """404: unknown model, version or route."""


class Unavailable(PolicydError):
    """503: the version is not ready, the sequence limit is reached or the server is stopping.

    ``.retry_after`` is the server's ``Retry-After`` in seconds, or None when it sent none.
    """

    def __init__(self, message: str, status: Optional[int] = 503, request_id: Optional[str] = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message, status, request_id)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """503 because the model's queue was full or the request timed out in the queue: it did not run."""


class Timeout(PolicydError):
    """The client gave up waiting for the answer (its socket timeout or gRPC deadline).

    The request may have run: it is never retried.
    """


class ConnectError(PolicydError):
    """The connection failed: could not connect (``.sent`` False: nothing was sent, retried), or it
    was lost after the request was sent (``.sent`` True: the request may have run, never retried)."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


#: The name the shared API uses for ConnectError.
ConnectionError_ = ConnectError


class ServerError(PolicydError):
    """500 or any other status that is not one of the above (401, 403, 415, ...)."""


def from_status(status: int, message: str, request_id: Optional[str] = None,
                retry_after: Optional[float] = None) -> PolicydError:
    """The exception for an HTTP status and the server's message."""
    if status in (400, 413):
        return InvalidArgument(message, status, request_id)
    if status == 404:
        return NotFound(message, status, request_id)
    if status == 503:
        low = message.lower()
        if "queue full" in low or "still queued" in low:
            return Overloaded(message, status, request_id, retry_after)
        return Unavailable(message, status, request_id, retry_after)
    return ServerError(message, status, request_id)
