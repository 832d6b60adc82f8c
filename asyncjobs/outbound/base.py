"""What the outbound modules share: their errors, the one deadline of a call, and the mark
of the tasks asyncjobs enqueues itself."""

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from asyncjobs.exceptions import AsyncJobsError


class TaskContext(Protocol):
    """What the outbound tasks use of the context the worker passes them (the backend's
    ``JobContext``)."""

    job_id: str
    database: str
    cancel_event: threading.Event

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` if the job was asked to cancel."""
        ...

    def record_http_status(self, status: int) -> None:
        """Record the HTTP status of the attempt's request."""
        ...


class OutboundError(AsyncJobsError):
    """The errors of outbound calls. Stored rows name them by their dotted path (in
    ``fail_on`` and as an attempt's ``error_class``), which is ``asyncjobs.outbound.<name>``
    whichever module defines them."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__module__ = "asyncjobs.outbound"


class OutboundURLRefusedError(OutboundError, ValueError):
    """Raised when a callback or webhook URL is not allowed: not http(s), a bad port, not on
    the allow-list, or resolving to an address that is not public. Never retried."""


class InvalidHeaderError(OutboundError, ValueError):
    """Raised (by ``check_headers``, at enqueue) for request headers that cannot be sent: a
    name that is not an HTTP token, a reserved name, or a value with control characters or
    characters outside ISO-8859-1."""


class OutboundTimeoutError(OutboundError, TimeoutError):
    """Raised when an outbound request (DNS, connect, TLS, request, response headers and
    body, redirects) does not finish within its deadline, ``OUTBOUND_TIMEOUT``. Retried."""


class OutboundConnectionError(OutboundError, ConnectionError):
    """Raised when an outbound request fails on the network or in the protocol: refused or
    reset connection, TLS failure, a malformed or oversized response head. Retried."""


class PermanentHTTPError(OutboundError):
    """Raised when a callback or webhook answers a 4xx status that retrying will not fix.
    The job fails at once. ``http_status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class RetryableHTTPError(OutboundError):
    """Raised when a callback or webhook answers 408, 425, 429 or 5xx: retried with the job's
    backoff. ``http_status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class WebhookSignatureError(OutboundError, ValueError):
    """Raised by ``verify_signature`` for a missing, malformed, wrong or stale signature."""


def internal_task(*, takes_context: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """Mark a function as a task asyncjobs enqueues itself. Unlike ``@task`` it needs no
    configured backend or queue at import time; the worker wraps it when it runs a job."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.asyncjobs_internal = {"takes_context": takes_context}  # type: ignore[attr-defined]
        return func

    return mark


class Deadline:
    """The monotonic time by which an outbound call must be done."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (> 0); raises ``OutboundTimeoutError`` once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise OutboundTimeoutError(f"The request did not finish within {self.seconds:g} s.")
        return left
