"""The task side of asyncjobs: ``JobTask``, a ``django.tasks.Task`` with asyncjobs' options
(the backend's ``task_class``), and ``JobContext``, what a ``takes_context=True`` task
receives."""

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from asyncjobs import services
from asyncjobs.exceptions import JobCancelled
from asyncjobs.tasks_api import Task, TaskContext


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTask(Task):
    """A ``django.tasks.Task`` with asyncjobs' options.

    Options left as ``None`` come from the task's queue in ``ASYNCJOBS["QUEUES"]``, else from
    the global ``ASYNCJOBS`` settings, when the job is enqueued.

    Parameters:
        max_attempts: how many times the job may run before it fails for good.
        backoff: ``Exponential(...)``, ``Fixed(...)`` or a module-level function
            ``f(attempt) -> timedelta``: the wait before each retry.
        retry_on: exception classes (or dotted paths) worth another attempt.
        fail_on: exception classes that fail the job at once, even if ``retry_on`` matches.
        timeout: ``timedelta`` or seconds; an attempt running longer is recorded as timed out.
        webhook_url: where to POST a signed notice when the job ends (usually per enqueue,
            through ``.using(webhook_url=...)``).
        unique: while a job of this task with the same arguments is waiting or running (and
            for ``unique_for`` after it succeeded), enqueueing returns that job instead.
        unique_for: how long a succeeded unique job keeps deduplicating.
        unique_key: an explicit key (usually per enqueue: ``.using(unique_key="order-42")``);
            implies ``unique``.
        rate_limit: at most this many starts of the task, e.g. ``"5/s"``, ``"100/m"``,
            across all workers (per ``concurrency_key`` if one is given).
        concurrency_limit: at most this many of the task's jobs running at once, cluster-wide
            (per ``concurrency_key`` if one is given; 1 by default with a key).
        concurrency_key: a key the limits apply to instead of the whole task, usually per
            enqueue: ``.using(concurrency_key=f"account:{account.pk}")``.
        depends_on: jobs (ids or ``TaskResult``s) the job waits for, per enqueue:
            ``.using(depends_on=[result])``; they must exist. The job runs once they have
            all ended, none failed for good nor was cancelled.
        on_dependency_failure: ``"cancel"`` (default): if a job it depends on fails for good
            or is cancelled, the job is cancelled too (and so are its own dependents);
            ``"run"``: it runs anyway once they have all ended.
    """

    max_attempts: int | None = None
    backoff: Any = None
    retry_on: tuple[type[BaseException] | str, ...] | None = None
    fail_on: tuple[type[BaseException] | str, ...] | None = None
    timeout: timedelta | float | None = None
    webhook_url: str | None = None
    unique: bool | None = None
    unique_for: timedelta | float | None = None
    unique_key: str | None = None
    rate_limit: str | None = None
    concurrency_limit: int | None = None
    concurrency_key: str | None = None
    depends_on: tuple[str, ...] | None = None
    on_dependency_failure: str | None = None

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        max_attempts: int | None = None,
        backoff: Any = None,
        retry_on: Iterable[type[BaseException] | str] | None = None,
        fail_on: Iterable[type[BaseException] | str] | None = None,
        timeout: timedelta | float | None = None,
        webhook_url: str | None = None,
        unique_key: str | None = None,
        unique_for: timedelta | float | None = None,
        concurrency_key: str | None = None,
        depends_on: Iterable[Any] | None = None,
        on_dependency_failure: str | None = None,
    ) -> "JobTask":
        """A copy of this task with some defaults changed (Django's and asyncjobs' own).

        ``depends_on`` takes job ids, ``TaskResult``s or jobs; raises ``JobNotFoundError``
        for a value that cannot be a job's id (whether the jobs exist is checked at
        enqueue)."""
        changes: dict[str, Any] = {
            key: value
            for key, value in {
                "priority": priority,
                "queue_name": queue_name,
                "run_after": run_after,
                "backend": backend,
                "max_attempts": max_attempts,
                "backoff": backoff,
                "retry_on": tuple(retry_on) if retry_on is not None else None,
                "fail_on": tuple(fail_on) if fail_on is not None else None,
                "timeout": timeout,
                "webhook_url": webhook_url,
                "unique_key": unique_key,
                "unique_for": unique_for,
                "concurrency_key": concurrency_key,
                "depends_on": (
                    tuple(str(pk) for pk in services.parse_ids(depends_on))
                    if depends_on is not None
                    else None
                ),
                "on_dependency_failure": on_dependency_failure,
            }.items()
            if value is not None
        }
        return replace(self, **changes)

    def options(self) -> services.JobOptions:
        """This task's retry policy, resolved against its queue and the settings."""
        return services.resolve_options(
            self.queue_name,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            retry_on=self.retry_on,
            fail_on=self.fail_on,
            timeout=self.timeout,
        )


# django-stubs declares TaskContext as a plain dataclass; in Django it is frozen.
@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext(TaskContext):  # type: ignore[misc]
    """The context a ``takes_context=True`` task receives as its first argument.

    Besides Django's ``task_result`` and ``attempt`` it can report progress and see a
    cancellation request.
    """

    job_id: str
    database: str = "default"
    # The batch the job belongs to, if any: ``asyncjobs.current_batch(context)`` adds jobs
    # to it (child jobs).
    batch_id: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    # What the task reports about its attempt (the HTTP status of a call), for the record.
    attempt_data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel this job (seen within one worker heartbeat)."""
        return self.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` if the job was asked to cancel; call it between steps."""
        if self.cancel_requested:
            raise JobCancelled(f"Job {self.job_id} was cancelled.")

    def record_http_status(self, status: int) -> None:
        """Store ``status`` on this attempt's record (HTTP callbacks and webhooks do)."""
        self.attempt_data["http_status"] = status

    def set_progress(
        self, current: float, total: float | None = None, message: str = ""
    ) -> dict[str, Any]:
        """Store the job's progress (shown by the admin and the API); returns it."""
        return services.set_progress(
            self.job_id, current=current, total=total, message=message, using=self.database
        )
