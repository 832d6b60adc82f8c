"""The retry policy of a job: the options it is enqueued with, resolved once, and whether an
error is retried under them."""

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils.module_loading import import_string

from asyncjobs import retry
from asyncjobs.conf import as_timedelta, jobs_settings
from asyncjobs.exceptions import (
    ConfigurationError,
    JobTimeoutError,
    Retry,
    TaskImportError,
    WorkerLostError,
)
from asyncjobs.models import Job

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """The retry policy a job is enqueued with, fully resolved."""

    max_attempts: int
    backoff: retry.Backoff
    retry_on: tuple[str, ...]
    fail_on: tuple[str, ...]
    timeout: timedelta | None


def class_path(cls: type) -> str:
    """The dotted import path of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_paths(value: Iterable[type[BaseException] | str], name: str) -> tuple[str, ...]:
    paths = []
    for item in value:
        if isinstance(item, str):
            paths.append(item)
        elif isinstance(item, type) and issubclass(item, BaseException):
            paths.append(class_path(item))
        else:
            raise ConfigurationError(f"{name} must list exception classes, got {item!r}.")
    return tuple(paths)


def resolve_options(
    queue_name: str,
    *,
    max_attempts: int | None = None,
    backoff: retry.Backoff | Callable[[int], Any] | dict[str, Any] | None = None,
    retry_on: Iterable[type[BaseException] | str] | None = None,
    fail_on: Iterable[type[BaseException] | str] | None = None,
    timeout: timedelta | float | None = None,
) -> JobOptions:
    """Resolve a task's options: the task's own value, else its queue's, else the global one.

    Raises ``ConfigurationError`` for values that cannot work.
    """

    def pick(value: object, key: str) -> Any:  # (settings are untyped)
        return value if value is not None else jobs_settings.queue_option(queue_name, key)

    attempts = pick(max_attempts, "MAX_ATTEMPTS")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigurationError(f"max_attempts must be an integer >= 1, got {attempts!r}.")
    resolved_timeout = as_timedelta(pick(timeout, "TIMEOUT"))
    if resolved_timeout is not None and resolved_timeout <= timedelta(0):
        raise ConfigurationError("timeout must be positive.")
    return JobOptions(
        max_attempts=attempts,
        backoff=retry.as_backoff(pick(backoff, "BACKOFF")),
        retry_on=_exception_paths(pick(retry_on, "RETRY_ON"), "retry_on"),
        fail_on=_exception_paths(pick(fail_on, "FAIL_ON"), "fail_on"),
        timeout=resolved_timeout,
    )


@functools.lru_cache(maxsize=256)
def _exception_class(path: str) -> type[BaseException] | None:
    try:
        cls = import_string(path)
    except ImportError:
        logger.warning("Exception class %s in a retry policy does not import", path)
        return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def _matches(error: BaseException, paths: Iterable[str]) -> bool:
    return any(
        (cls := _exception_class(path)) is not None and isinstance(error, cls) for path in paths
    )


def is_retryable(job: Job, error: BaseException) -> bool:
    """Whether the job's policy retries after ``error`` (attempts permitting).

    ``fail_on`` wins over everything. A ``Retry`` request, a timeout and a lost worker are
    retried whatever ``retry_on`` says; other errors are retried if they match ``retry_on``.
    A ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``
    raised by task code) counts as an ``Exception`` there: the default policy retries it.
    """
    if _matches(error, job.fail_on):
        return False
    if isinstance(error, Retry | JobTimeoutError | WorkerLostError | TaskImportError):
        return True
    if not isinstance(error, Exception) and _matches(_AN_EXCEPTION, job.retry_on):
        return True
    return _matches(error, job.retry_on)


_AN_EXCEPTION = Exception()
