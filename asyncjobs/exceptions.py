"""Exceptions raised by asyncjobs, and the ones task code raises to talk to the worker."""

from collections.abc import Iterable
from datetime import timedelta


class AsyncJobsError(Exception):
    """Base class of every error asyncjobs raises."""


class ConfigurationError(AsyncJobsError):
    """Raised when the ``ASYNCJOBS`` setting or a task option is invalid."""


class InvalidArgumentsError(AsyncJobsError, TypeError):
    """Raised at enqueue when a task's arguments cannot be stored as JSON.

    Nothing is stored when it is raised.
    """


class ArgumentsTooLargeError(InvalidArgumentsError):
    """Raised at enqueue when a job's arguments, as JSON, are larger than
    ``MAX_ARGUMENTS_BYTES``.

    Nothing is stored (for a bulk enqueue: none of the jobs). ``size`` and ``limit`` are
    in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"Task arguments are {size:,} bytes of JSON; MAX_ARGUMENTS_BYTES is {limit:,}."
        )
        self.size = size
        self.limit = limit


class QueueFullError(AsyncJobsError):
    """Raised at enqueue when a queue holds ``MAX_QUEUED`` waiting jobs already.

    Nothing is stored (for a bulk enqueue: none of the jobs). ``queue`` and ``limit`` say
    which queue and what limit.
    """

    def __init__(self, queue: str, limit: int) -> None:
        super().__init__(f"Queue {queue!r} is full: it holds its maximum of {limit} waiting jobs.")
        self.queue = queue
        self.limit = limit


QueueFull = QueueFullError  # the name the issue tracker and other queues use


class JobNotFoundError(AsyncJobsError, LookupError):
    """Raised by the job services when no job has the given id."""


class UnknownQueueError(AsyncJobsError, ValueError):
    """Raised when a queue that is not configured is paused (``TASKS`` ``QUEUES``, the keys
    of ``ASYNCJOBS["QUEUES"]`` and ``WEBHOOK_QUEUE`` name the configured queues). ``queue``
    is the name given."""

    def __init__(self, queue: str, known: Iterable[str]) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"Unknown queue {queue!r}; one of: {names}.")
        self.queue = queue


class InvalidTransitionError(AsyncJobsError):
    """Raised when a job is asked for a transition its status does not allow.

    For example retrying a job that is still queued, or cancelling one that succeeded.
    """


class BatchClosedError(AsyncJobsError):
    """Raised when jobs are added to a batch that has finished (or does not exist); nothing
    is stored."""


class BatchNotFoundError(AsyncJobsError, LookupError):
    """Raised when no batch has the given id."""


class TaskImportError(AsyncJobsError, ImportError):
    """Raised when a job's task path does not import to a task.

    In the worker this fails the attempt (and, with the attempts spent, the job); the worker
    itself carries on.
    """


class ResultNotSerializableError(AsyncJobsError, TypeError):
    """Recorded when a task returns a value that cannot be stored as JSON.

    The attempt fails at once and is not retried: running the task again would return the
    same kind of value.
    """


class ResultTooLargeError(ResultNotSerializableError):
    """Recorded when a task returns a value whose JSON is larger than ``MAX_RESULT_BYTES``.

    Like any result that cannot be stored, the attempt fails at once and is not retried.
    ``size`` and ``limit`` are in bytes.
    """

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class JobTimeoutError(AsyncJobsError):
    """Recorded (and raised inside the task, where possible) when an attempt runs past its
    ``timeout``."""


class WorkerLostError(AsyncJobsError):
    """Recorded for an attempt whose worker stopped heartbeating before it finished."""


class WorkerMemoryError(AsyncJobsError, MemoryError):
    """Recorded (and raised inside the task, where possible) for the attempts running when
    their worker's resident memory passed its ``--max-memory`` limit."""


class WorkerShutdownError(AsyncJobsError):
    """Recorded for an attempt released by a worker that shut down before it finished."""


class Retry(AsyncJobsError):
    """Raise from a task to ask for another attempt after ``delay``.

    The attempt is recorded as failed and counts against ``max_attempts``; with no attempts
    left the job fails. ``delay`` defaults to the task's backoff policy; a delay past a year
    (``asyncjobs.retry.MAX_DELAY``) waits a year.

    Parameters:
        delay: how long to wait before the next attempt (``timedelta`` or seconds).
        reason: a message recorded on the attempt.
    """

    def __init__(self, delay: timedelta | float | None = None, reason: str = "") -> None:
        if delay is not None and not isinstance(delay, timedelta):
            seconds = delay
            try:
                delay = timedelta(seconds=seconds)
            except OverflowError:  # past timedelta.max: the longest wait (then capped)
                if not seconds > 0:
                    raise
                delay = timedelta.max
        if delay is not None and delay < timedelta(0):
            raise ValueError("Retry delay must not be negative.")
        self.delay: timedelta | None = delay
        self.reason = reason
        super().__init__(reason or "retry requested")


class JobCancelled(AsyncJobsError):
    """Raised by ``context.raise_if_cancelled()`` inside a task whose job was cancelled.

    When it propagates out of the task the attempt is recorded as cancelled and the job ends
    ``cancelled``.
    """


class TransactionLeftOpenError(AsyncJobsError):
    """Recorded (never raised to callers) as the error of an attempt whose task returned
    inside a database transaction it opened and never ended (``set_autocommit(False)``
    without a commit, an ``atomic()`` entered and not left, a raw ``BEGIN``). The worker
    rolled it back and closed the connection, so what the task wrote in it is lost: the
    attempt fails, and is retried by the job's policy. A task that raised keeps its own
    error; the transaction is rolled back all the same."""


class OutcomeNotStoredError(AsyncJobsError):
    """Recorded (never raised to callers) as an attempt's error when the database refused
    to store the attempt's outcome as it was (a data error, not a lost connection): the
    message names the original outcome and the database's complaint. The attempt still
    ends, and the job moves on by its policy instead of staying ``running``."""


class DependencyFailedError(AsyncJobsError):
    """Recorded (never raised to callers) as the last error of a job cancelled because a job
    it depends on failed for good or was cancelled (see ``depends_on``)."""
