"""Attempts: claiming one job for an in-process run, recording an attempt's success or
failure, and giving running jobs back (a worker's shutdown, its unstarted prefetch buffer, a
lost worker's expired lease).

Every state change is a conditional UPDATE on the status and worker it starts from, so a
worker that lost its job (rescued meanwhile) changes nothing.
"""

import logging
import traceback as tb
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Case, DateTimeField, F, OuterRef, Q, Subquery, Value, When

from asyncjobs import db, retry
from asyncjobs.exceptions import Retry, WorkerLostError, WorkerShutdownError
from asyncjobs.models import TERMINAL_STATUSES, Attempt, AttemptOutcome, Job, JobStatus
from asyncjobs.services import batches
from asyncjobs.services.dependencies import job_ended
from asyncjobs.services.policy import class_path, is_retryable
from asyncjobs.services.values import JSON
from asyncjobs.services.webhooks import schedule_webhook
from asyncjobs.text import safe_text

logger = logging.getLogger(__name__)

# Error text is bounded so one runaway exception cannot bloat the table.
MAX_ERROR_MESSAGE = 2_000
MAX_TRACEBACK = 20_000


# Task code's errors are anyone's objects: their attributes may be properties, their class
# may have a metaclass, and reading either may raise. Whatever is read from an error on the
# way to recording it goes through a guard, so that the attempt is still recorded.


def _attr(value: object, name: str) -> object:
    """``getattr(value, name, None)``, and None too if reading it raises."""
    try:
        return getattr(value, name, None)
    except Exception:
        return None


def _error_class(error: BaseException) -> str:
    """The dotted path of the class of ``error`` (bounded), or ``<unknown>`` if its
    metaclass will not tell."""
    try:
        path = class_path(type(error))
    except Exception:
        path = "<unknown>"
    return safe_text(path, 255, keep="end")


def _format_traceback(error: BaseException) -> str:
    try:
        return "".join(tb.format_exception(error))
    except BaseException as exc:  # a hostile __str__ (KeyboardInterrupt too), __cause__, ...
        return (
            f"{_error_class(error)}: {safe_text(error, MAX_ERROR_MESSAGE)}\n"
            f"(the traceback could not be formatted: {_error_class(exc)})\n"
        )


def error_fields(error: BaseException, traceback_text: str | None = None) -> dict[str, str]:
    """The Attempt columns describing ``error``. Reading ``error`` never raises here."""
    text = traceback_text if traceback_text is not None else _format_traceback(error)
    return {
        "error_class": _error_class(error),
        "error_message": safe_text(error, MAX_ERROR_MESSAGE),
        "traceback": safe_text(text, MAX_TRACEBACK, keep="end"),
    }


def _status_code(value: object) -> int | None:
    """``value`` if it is an HTTP status code (an int from 100 to 599), else None."""
    return value if type(value) is int and 100 <= value <= 599 else None


def http_status_of(error: BaseException) -> int | None:
    """The HTTP status an error carries, if any: ``error.http_status`` (asyncjobs' own
    callback errors), or the status of the response on the error (httpx and requests:
    ``error.response.status_code``; urllib's ``HTTPError``: ``error.code``), looked for on
    the error and then on its causes, so that a task's own error raised ``from`` an HTTP
    error counts too. Duck-typed: no HTTP library is imported. An attribute whose reading
    raises counts as absent."""
    seen = 0
    current: object = error
    while current is not None and seen < 5:
        response = _attr(current, "response")
        for candidate in (
            _attr(current, "http_status"),
            _attr(response, "status_code"),
            _attr(response, "status"),
            _attr(current, "code") if _attr(current, "getcode") is not None else None,
        ):
            status = _status_code(candidate)
            if status is not None:
                return status
        cause = _attr(current, "__cause__")  # (not ``or``: an error's __bool__ may raise)
        current = cause if cause is not None else _attr(current, "__context__")
        seen += 1
    return None


def _close_attempt(job: Job, *, worker_id: str, now: datetime, **fields: object) -> bool:
    """Finish the job's current attempt if it is still open and still ours."""
    return (
        Attempt.objects.using(job._state.db)
        .filter(job_id=job.pk, number=job.attempts, worker_id=worker_id, finished_at__isnull=True)
        .update(finished_at=now, **fields)
        == 1
    )


def _started(started_at: datetime | None) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """The attempt's and the job's fields that move an attempt's start from its claim to
    ``started_at`` (when the task began, after waiting in a prefetch buffer); none if None.

    The job's own ``started_at`` stays its first claim's time: ``TaskResult.started_at`` must
    read the same while the job runs and after it finished (django.tasks' contract), and
    only the claim writes it. (A prefetched job's claim precedes its start by at most
    ``PREFETCH_MAX_WAIT``; the attempt row has the exact start.)"""
    if started_at is None:
        return {}, {}
    return {"started_at": started_at}, {"last_attempted_at": started_at}


def record_success(
    job: Job,
    *,
    worker_id: str,
    return_value: JSON,
    now: datetime,
    http_status: int | None = None,
    started_at: datetime | None = None,
) -> bool:
    """Record that the current attempt of ``job`` succeeded with ``return_value``.

    ``return_value`` must already be JSON-normalised; ``started_at`` (when the task began,
    if later than its claim) replaces the claim time. Returns False, changing nothing, if
    the attempt is no longer this worker's (its lease was lost and the job rescued).
    """
    using = job._state.db or "default"
    success = Success(job, return_value, now, http_status=http_status, started_at=started_at)
    # The batch completion's statements, for a batch of one (one function per transition).
    return job.pk in record_successes([success], worker_id=worker_id, using=using)


@dataclass
class Success:
    """A successful attempt waiting to be recorded by ``record_successes``."""

    job: Job
    return_value: JSON  # already JSON-normalised
    finished_at: datetime
    http_status: int | None = None
    # When the task began running, if later than the claim (it waited in the worker's
    # prefetch buffer); replaces the claim time on the attempt.
    started_at: datetime | None = None


def record_successes(batch: Sequence[Success], *, worker_id: str, using: str) -> set[uuid.UUID]:
    """Record many successful attempts in one transaction (one commit).

    Same rules as ``record_success``, job by job: an attempt that is no longer this worker's
    changes nothing. Webhook deliveries are enqueued in the same transaction. Returns the
    primary keys of the jobs recorded. The jobs that others depend on resolve their
    dependents in the same transaction.
    """
    with transaction.atomic(using=using):
        items = [
            (s.job, s.return_value, _status_code(s.http_status), s.started_at, s.finished_at)
            for s in batch
        ]
        recorded: dict[Any, bool]
        if any(s.job.batch_id is not None for s in batch):
            recorded = batches.complete_in_batches(items, worker_id=worker_id, using=using)
        else:
            recorded = db.complete_succeeded(using, items, worker_id=worker_id)
        for success in batch:
            job = success.job
            if job.pk not in recorded:
                continue
            job.status, job.return_value = JobStatus.SUCCEEDED, success.return_value
            job.finished_at = success.finished_at
            schedule_webhook(job, now=success.finished_at, using=using)
        if any(recorded.values()):  # (has_dependents, read under the rows' locks)
            parents = {s.job.pk: s for s in batch if recorded.get(s.job.pk)}
            job_ended(
                dict.fromkeys(parents, JobStatus.SUCCEEDED),
                values={pk: s.return_value for pk, s in parents.items()},
                using=using,
                now=max(s.finished_at for s in parents.values()),
                known_parents=True,
            )
    return set(recorded)


def record_failure(
    job: Job,
    *,
    worker_id: str,
    error: BaseException,
    now: datetime,
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
    traceback_text: str | None = None,
    retryable: bool | None = None,
    http_status: int | None = None,
    started_at: datetime | None = None,
) -> JobStatus | None:
    """Record a failed attempt of ``job`` and move the job on.

    The job is scheduled again (after the backoff, or a ``Retry`` exception's delay) if the
    error is retryable and attempts are left, unless it was asked to cancel; it ends
    ``cancelled`` for a ``cancelled`` outcome or a retryable failure of a job asked to cancel,
    else ``failed`` (the dead letter). ``retryable`` overrides the policy check;
    ``started_at`` as for ``record_success``. Returns the job's new status, or None,
    changing nothing, if the attempt is no longer this worker's.
    """
    using = job._state.db or "default"
    if outcome == AttemptOutcome.CANCELLED:
        new_status, run_after = JobStatus.CANCELLED, job.run_after
    else:
        if retryable is None:
            try:
                retryable = is_retryable(job, error)
            except Exception:  # (isinstance reads ``__class__``, which an error may override)
                # fail_on could not be checked, and it wins over everything: no retry.
                logger.exception("Job %s: its retry policy could not be applied", job.pk)
                retryable = False
        if retryable and job.attempts_left > 0:
            run_after = now + _retry_delay(job, error)
            new_status = JobStatus.SCHEDULED if run_after > now else JobStatus.QUEUED
        else:
            new_status, run_after = JobStatus.FAILED, job.run_after
    finished_at = now if new_status in (JobStatus.FAILED, JobStatus.CANCELLED) else None
    if http_status is None:
        http_status = http_status_of(error)
    attempt_start, job_start = _started(started_at)
    with transaction.atomic(using=using):
        if not _close_attempt(
            job,
            worker_id=worker_id,
            now=now,
            outcome=outcome,
            http_status=_status_code(http_status),
            **attempt_start,
            **error_fields(error, traceback_text),
        ):
            return None
        mine = Job.objects.using(using).filter(
            pk=job.pk, status=JobStatus.RUNNING, worker_id=worker_id
        )
        # Asked to cancel while this attempt ran (a task that ignored the request): no
        # further attempt. The row lock orders this read with cancel_job's write.
        if (
            new_status not in TERMINAL_STATUSES
            and mine.select_for_update()
            .filter(cancel_requested_at__isnull=False)
            .values_list("pk", flat=True)
            .first()
            is not None
        ):
            new_status, run_after, finished_at = JobStatus.CANCELLED, job.run_after, now
        mine.update(
            **job_start,
            status=new_status,
            run_after=run_after,
            finished_at=finished_at,
            worker_id="",
            lease_expires_at=None,
            unique_key=None if finished_at is not None else F("unique_key"),
            last_error_class=_error_class(error),
            last_error_message=safe_text(error, MAX_ERROR_MESSAGE),
        )
        job.status, job.run_after, job.finished_at = new_status, run_after, finished_at
        if new_status in TERMINAL_STATUSES:
            schedule_webhook(job, now=now, using=using)
            ended = batches.Ended()
            ended.add(new_status)
            # Its dependents, then its batch (job rows before batch rows, on every path).
            job_ended(
                {job.pk: new_status},
                using=using,
                now=now,
                batch_ends={job.batch_id: ended} if job.batch_id is not None else None,
            )
    return new_status


def _retry_delay(job: Job, error: BaseException) -> timedelta:
    """The wait before the next attempt: a ``Retry``'s delay, else the job's backoff, within
    ``[0, retry.MAX_DELAY]``. A ``Retry`` whose delay cannot be read (or is no
    ``timedelta``) asks for none; a backoff that raises (a callable's bug, a stored policy
    gone bad) gives way to the default backoff: the failure is recorded and retried all
    the same."""
    used = job.attempts - job.free_attempts
    try:
        requested = _attr(error, "delay") if isinstance(error, Retry) else None
        if isinstance(requested, timedelta):
            return retry.clamp_delay(requested)
        if not job.backoff:
            return timedelta(0)
        return retry.clamp_delay(retry.from_json(job.backoff).delay(used))
    except Exception:
        logger.exception(
            "Job %s: its retry delay could not be computed; using the default backoff", job.pk
        )
        return retry.clamp_delay(retry.DEFAULT_BACKOFF.delay(used))


def claim_job(
    job_id: uuid.UUID | str,
    *,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    using: str = "default",
) -> Job | None:
    """Claim one particular queued job for ``worker_id`` (as a worker's claim would: status,
    lease, attempt row); None if it is not queued. For in-process runs (``RUN_INLINE``)."""
    # queued -> running and the attempt row: the claims' own statements.
    with transaction.atomic(using=using):
        started = db.start_jobs(using, [job_id], worker_id=worker_id, now=now, lease=lease)
    return started[0] if started else None


def release_jobs(
    jobs: Iterable[Job],
    *,
    worker_id: str,
    now: datetime,
    error: BaseException | None = None,
    delay: timedelta = timedelta(0),
) -> int:
    """Give back running jobs whose attempts were interrupted by no fault of theirs: a worker
    shutting down, or (``error``) a database that refused the task a connection.

    Each interrupted attempt is recorded as lost (with ``error``, default
    ``WorkerShutdownError``), the job is queued again after ``delay`` (scheduled if that is
    in the future) and the attempt does not count against ``max_attempts``. Returns how many
    jobs were released.
    """
    if error is None:
        error = WorkerShutdownError(f"worker {worker_id} shut down before the job finished")
    run_after = now + delay
    status = JobStatus.SCHEDULED if run_after > now else JobStatus.QUEUED
    released = 0
    for job in jobs:
        using = job._state.db or "default"
        with transaction.atomic(using=using):
            if not _close_attempt(
                job,
                worker_id=worker_id,
                now=now,
                outcome=AttemptOutcome.LOST,
                **error_fields(error, traceback_text=""),
            ):
                continue
            moved = (
                Job.objects.using(using)
                .filter(pk=job.pk, status=JobStatus.RUNNING, worker_id=worker_id)
                .update(
                    status=status,
                    run_after=run_after,
                    free_attempts=F("free_attempts") + 1,
                    worker_id="",
                    lease_expires_at=None,
                )
            )
            if moved:
                job.status, job.run_after = status, run_after
                job.free_attempts += 1
            released += moved
    return released


def unclaim_jobs(jobs: Sequence[Job], *, worker_id: str, using: str) -> int:
    """Give back claimed jobs that a worker never started (its prefetch buffer), as if the
    claim had not happened: the open attempt row is deleted, ``attempts`` goes back down, and
    the job is queued again in its old place (``run_after`` unchanged). One transaction.
    Jobs no longer this worker's (rescued meanwhile) are left alone. Returns how many jobs
    were given back.
    """
    if not jobs:
        return 0
    mine = Q()
    for job in jobs:
        mine |= Q(job_id=job.pk, number=job.attempts)
    previous_start = (
        Attempt.objects.using(using)
        .filter(job_id=OuterRef("pk"))
        .order_by("-number")
        .values("started_at")[:1]
    )
    with transaction.atomic(using=using):
        # An open attempt of ours exists exactly while the job is running in our hands
        # (both change in one transaction), so the two statements match the same jobs.
        Attempt.objects.using(using).filter(
            mine, worker_id=worker_id, finished_at__isnull=True
        ).delete()
        return (
            Job.objects.using(using)
            .filter(pk__in=[job.pk for job in jobs], status=JobStatus.RUNNING, worker_id=worker_id)
            .update(
                # Before ``attempts``: MariaDB/MySQL assign left to right, each assignment
                # seeing the ones before it (elsewhere they all see the old row).
                started_at=Case(
                    When(attempts=1, then=Value(None, output_field=DateTimeField())),
                    default=F("started_at"),
                ),
                last_attempted_at=Subquery(previous_start),
                status=JobStatus.QUEUED,
                worker_id="",
                lease_expires_at=None,
                attempts=F("attempts") - 1,
            )
        )


def rescue_expired(*, now: datetime, using: str = "default", limit: int = 500) -> int:
    """Recover running jobs whose lease expired: their worker died or lost the database.

    The open attempt is recorded as lost; the job is queued again at once, or fails for good
    if it has no attempts left. Returns how many jobs were rescued.
    """
    expired = list(
        Job.objects.using(using)
        .lease_expired(now)
        .only(
            "id",
            "attempts",
            "max_attempts",
            "free_attempts",
            "worker_id",
            "fail_on",
            "webhook_url",
            "task_path",
            "queue_name",
            "priority",
            "backend",
            "enqueued_by",
            "batch",
        )[:limit]
    )
    for job in expired:
        error = WorkerLostError(
            f"worker {job.worker_id} stopped renewing its lease; the attempt was lost"
        )
        retryable = is_retryable(job, error) and job.attempts_left > 0
        with transaction.atomic(using=using):
            moved = (
                Job.objects.using(using)
                .filter(pk=job.pk, status=JobStatus.RUNNING, lease_expires_at__lt=now)
                .update(
                    status=JobStatus.QUEUED if retryable else JobStatus.FAILED,
                    run_after=now,
                    finished_at=None if retryable else now,
                    worker_id="",
                    lease_expires_at=None,
                    unique_key=F("unique_key") if retryable else None,
                    last_error_class=class_path(WorkerLostError),
                    last_error_message=safe_text(error, MAX_ERROR_MESSAGE),
                )
            )
            if moved:
                Attempt.objects.using(using).filter(
                    job_id=job.pk, number=job.attempts, finished_at__isnull=True
                ).update(
                    finished_at=now,
                    outcome=AttemptOutcome.LOST,
                    **error_fields(error, traceback_text=""),
                )
                if not retryable:
                    schedule_webhook(job, now=now, using=using)
                    job_ended(  # its dependents, then its batch
                        {job.pk: JobStatus.FAILED},
                        using=using,
                        now=now,
                        batch_ends={job.batch_id: batches.Ended(failed=1)}
                        if job.batch_id is not None
                        else None,
                    )
        if moved:
            logger.warning(
                "Rescued job %s from lost worker %s (%s)",
                job.pk,
                job.worker_id,
                "requeued" if retryable else "failed: no attempts left",
                extra={"job_id": str(job.pk), "worker_id": job.worker_id},
            )
    return len(expired)
