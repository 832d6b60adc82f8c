"""Helpers for testing code that enqueues jobs, and tasks themselves.

Two ways to test, both against your real test database (no mocks):

- **Manual** (the default): enqueueing stores jobs and nothing runs them. Assert what was
  enqueued with ``assert_enqueued`` / ``enqueued_jobs``, then run them with ``work_off()``,
  which claims and executes ready jobs in-process through the same code as ``runworker``
  (attempts recorded, retries scheduled per the task's policy).
- **Inline**: with ``ASYNCJOBS = {"RUN_INLINE": True}`` (e.g. in test settings or
  ``override_settings``), each job runs in-process as soon as the transaction that enqueued
  it commits (at once in autocommit). A failure is recorded like in a worker and its retry
  is scheduled, not run: call ``work_off()`` (with time advanced, e.g. by freezegun) to run
  due retries.

Example (pytest-django)::

    from asyncjobs.testing import assert_enqueued, work_off

    def test_signup_sends_a_welcome_email(client, mailoutbox):
        client.post("/signup/", {"email": "a@example.com"})
        assert_enqueued(send_welcome_email, kwargs={"email": "a@example.com"})
        assert work_off().succeeded == 1
        assert len(mailoutbox) == 1
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from asyncjobs.inline import run_inline as run_inline  # (its home before asyncjobs.inline)
from asyncjobs.models import Job, JobStatus
from asyncjobs.tasks_api import Task

__all__ = [
    "WorkOff",
    "assert_enqueued",
    "assert_not_enqueued",
    "enqueued_jobs",
    "work_off",
]

UNSTARTED = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.WAITING)


def _task_path(task: Task | str) -> str:
    return task if isinstance(task, str) else task.module_path


def enqueued_jobs(
    task: Task | str | None = None,
    *,
    queue: str | None = None,
    statuses: Sequence[str] = UNSTARTED,
    using: str = "default",
) -> list[Job]:
    """Jobs not started yet (queued, scheduled or waiting for dependencies), oldest first;
    filtered by ``task`` (a task or its dotted path), ``queue`` and ``statuses``."""
    jobs = Job.objects.using(using).filter(status__in=list(statuses))
    if task is not None:
        jobs = jobs.filter(task_path=_task_path(task))
    if queue is not None:
        jobs = jobs.filter(queue_name=queue)
    return list(jobs.order_by("enqueued_at", "id"))


def _matching(
    task: Task | str,
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    queue: str | None,
    using: str,
) -> tuple[list[Job], list[Job]]:
    candidates = enqueued_jobs(task, queue=queue, using=using)
    matches = [
        job
        for job in candidates
        if (args is None or job.args == list(args)) and (kwargs is None or job.kwargs == kwargs)
    ]
    return matches, candidates


def _describe(jobs: list[Job]) -> str:
    if not jobs:
        return "none"
    return "; ".join(
        f"{j.task_path}(args={j.args}, kwargs={j.kwargs}) on {j.queue_name}" for j in jobs
    )


def assert_enqueued(
    task: Task | str,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    count: int | None = None,
    using: str = "default",
) -> list[Job]:
    """Assert that jobs of ``task`` wait to run (with these ``args``/``kwargs``/``queue`` when
    given; exactly ``count`` of them when given, else at least one). Returns the matches."""
    matches, candidates = _matching(task, args, kwargs, queue, using)
    expected = "at least 1" if count is None else str(count)
    if (count is None and not matches) or (count is not None and len(matches) != count):
        raise AssertionError(
            f"Expected {expected} waiting job(s) of {_task_path(task)} with args={args} "
            f"kwargs={kwargs} queue={queue}; found {len(matches)}. Waiting jobs of this task: "
            f"{_describe(candidates)}."
        )
    return matches


def assert_not_enqueued(
    task: Task | str,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    using: str = "default",
) -> None:
    """Assert that no job of ``task`` (with these ``args``/``kwargs``/``queue``) waits to run."""
    matches, _ = _matching(task, args, kwargs, queue, using)
    if matches:
        raise AssertionError(
            f"Expected no waiting job of {_task_path(task)}; found {_describe(matches)}."
        )


@dataclass(frozen=True)
class WorkOff:
    """What ``work_off`` did: how many attempts ran, and how the jobs stand afterwards."""

    ran: int
    succeeded: int
    failed: int
    retrying: int


def work_off(
    *,
    backend: str = "default",
    queues: Sequence[str] | None = None,
    now: datetime | None = None,
    limit: int = 10_000,
) -> WorkOff:
    """Run every ready job (and jobs they enqueue) in this thread until none is ready.

    Due scheduled jobs are promoted first, so with time advanced (``now`` or freezegun) due
    retries run too. Sync timeouts are not enforced in-process. Returns counts of the jobs
    that ran: how many ended succeeded or failed, and how many wait for a retry.
    """
    from asyncjobs.worker.runner import Runner

    runner = Runner(backend=backend, queues=queues, concurrency=50)
    started = timezone.now()
    ran = runner.drain(now=now, limit=limit)
    alias = runner.alias
    touched = Job.objects.using(alias).filter(last_attempted_at__gte=min(started, now or started))
    return WorkOff(
        ran=ran,
        succeeded=touched.filter(status=JobStatus.SUCCEEDED).count(),
        failed=touched.filter(status=JobStatus.FAILED).count(),
        retrying=touched.filter(status__in=UNSTARTED).count(),
    )
