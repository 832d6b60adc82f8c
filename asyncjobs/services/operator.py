"""What operators do to jobs (the admin, the API, Python callers): retry, run now, cancel;
what a running task reports (progress); and the cheap counts the admin's lists need."""

import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, DateTimeField, F, Model, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from asyncjobs import db
from asyncjobs.exceptions import InvalidTransitionError, JobNotFoundError
from asyncjobs.models import ACTIVE_STATUSES, UNSTARTED_STATUSES, Job, JobStatus
from asyncjobs.services import batches
from asyncjobs.services.cancelling import CANCEL_FIELDS, mark_cancelled
from asyncjobs.services.deadlocks import retry_deadlocks
from asyncjobs.services.dependencies import job_ended, reopen, run_now_refusal
from asyncjobs.text import safe_text

logger = logging.getLogger(__name__)


def _get(job_id: uuid.UUID | str, using: str) -> Job:
    try:
        return Job.objects.using(using).get(pk=job_id)
    except (Job.DoesNotExist, ValidationError, ValueError, TypeError) as exc:
        # A malformed id is as unknown as a missing one.
        raise JobNotFoundError(f"No job with id {job_id!r}.") from exc


def _current_status(job: Job, using: str) -> str:
    """``job``'s status now, for an error saying why it could not move (it may have moved
    since it was read); raises ``JobNotFoundError`` if it was deleted meanwhile."""
    status = Job.objects.using(using).filter(pk=job.pk).values_list("status", flat=True).first()
    if status is None:
        raise JobNotFoundError(f"No job with id {str(job.pk)!r}.")
    return status


RETRYABLE_STATUSES = (JobStatus.FAILED, JobStatus.CANCELLED)


def retry_jobs(jobs: QuerySet[Job], *, now: datetime) -> int:
    """Queue again every failed or cancelled job of the queryset ``jobs``, with a fresh
    attempt budget and their history kept, in one statement. Returns how many moved; jobs in
    other statuses are left alone. Their batches reopen (see ``services.batches``).

    A job with dependencies that have not ended waits for them again (``waiting``); the
    dependents a retried job cancelled when it ended wait for it again (see
    ``services.dependencies.reopen``)."""
    changes = {
        "status": Case(
            When(pending_dependencies__gt=0, then=Value(JobStatus.WAITING.value)),
            default=Value(JobStatus.QUEUED.value),
        ),
        "run_after": now,
        "finished_at": None,
        "return_value": None,
        "cancel_requested_at": None,
        "free_attempts": F("attempts"),
    }
    retryable = jobs.filter(status__in=RETRYABLE_STATUSES)
    using = jobs.db
    with transaction.atomic(using=using):
        parents = list(
            retryable.filter(has_dependents=True)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", flat=True)
        )
        # Batch members locked, so that each moves with its batch's counters (a job failing
        # meanwhile is either locked here and counted, or not moved by this call).
        members = list(
            retryable.filter(batch__isnull=False)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "batch_id", "status")
        )
        moved = int(retryable.filter(batch__isnull=True).update(**changes))
        reopened: dict[uuid.UUID, batches.Ended] = {}
        for start in range(0, len(members), 500):
            chunk = members[start : start + 500]
            moved += (
                Job.objects.using(using)
                .filter(pk__in=[pk for pk, _, _ in chunk], status__in=RETRYABLE_STATUSES)
                .update(**changes)
            )
            for _, batch_id, status in chunk:
                reopened.setdefault(batch_id, batches.Ended()).add(status)
        if reopened:
            batches.jobs_reopened(reopened, using=using)
        if parents:
            reopen(parents, using=using)
    return moved


def retry_job(
    job_id: uuid.UUID | str, *, now: datetime | None = None, using: str = "default"
) -> Job:
    """Queue a failed or cancelled job again with a fresh attempt budget.

    Its attempt history is kept. Raises ``JobNotFoundError`` for an unknown id and
    ``InvalidTransitionError`` if the job is not failed or cancelled.
    """
    now = now or timezone.now()
    job = _get(job_id, using)
    if not retry_jobs(Job.objects.using(using).filter(pk=job.pk), now=now):
        raise InvalidTransitionError(
            f"Job {job.pk} is {_current_status(job, using)}; only failed or cancelled jobs "
            "can be retried."
        )
    job.refresh_from_db(using=using)
    logger.info("Job %s queued again by retry", job.pk, extra={"job_id": str(job.pk)})
    return job


def run_job_now(
    job_id: uuid.UUID | str, *, now: datetime | None = None, using: str = "default"
) -> Job:
    """Make a scheduled job (delayed, or waiting for its retry) ready at once.

    Raises ``JobNotFoundError`` for an unknown id and ``InvalidTransitionError`` if the job
    is not scheduled. A job waiting for its dependencies is refused, with the reason: it
    runs when they have ended, never before.
    """
    now = now or timezone.now()
    job = _get(job_id, using)
    refusal = run_now_refusal(job)
    if refusal is not None:
        raise InvalidTransitionError(refusal)
    moved = (
        Job.objects.using(using)
        .filter(pk=job.pk, status=JobStatus.SCHEDULED)
        .update(status=JobStatus.QUEUED, run_after=now)
    )
    if not moved:
        raise InvalidTransitionError(
            f"Job {job.pk} is {_current_status(job, using)}; only scheduled jobs can run now."
        )
    job.refresh_from_db(using=using)
    return job


@dataclass(slots=True)
class Cancelled:
    """What ``cancel_jobs`` did: the primary keys of the jobs it ``cancelled``, and those of
    the running jobs it ``asked`` to stop."""

    cancelled: list[Any] = field(default_factory=list)
    asked: list[Any] = field(default_factory=list)


def cancel_jobs(pks: Iterable[Any], *, now: datetime, using: str = "default") -> Cancelled:
    """not finished → cancelled: the one transition every cancel goes through (``cancel_job``,
    a batch's "cancel the rest"), for the jobs ``pks``, in one transaction.

    The jobs are locked in primary-key order; those waiting, scheduled or queued are
    cancelled, with their webhooks, their batches' counters (a batch this empties finishes)
    and the cancel of their dependents (``dependencies.job_ended``), in this transaction.
    Running ones are asked to stop (``cancel_requested_at``, kept if set already). Jobs
    that have ended, or do not exist, are left alone. Returns what it did."""
    ordered = sorted(set(pks), key=str)
    done = Cancelled()
    if not ordered:
        return done
    with transaction.atomic(using=using):
        # Locked, so that no job ends between this read and the update (SQLite: one writer).
        rows = list(
            Job.objects.using(using)
            .filter(pk__in=ordered, status__in=ACTIVE_STATUSES)
            .order_by("pk")
            .select_for_update()
            .only(*CANCEL_FIELDS)
        )
        unstarted = [job for job in rows if job.status in UNSTARTED_STATUSES]
        done.asked = [job.pk for job in rows if job.status == JobStatus.RUNNING]
        if unstarted:
            done.cancelled = [job.pk for job in unstarted]
            ended: dict[Any, batches.Ended] = {}
            mark_cancelled(unstarted, ended, using=using, now=now, cancel_requested_at=now)
            # Dependents first, then the batches (job rows before batch rows).
            job_ended(
                {job.pk: JobStatus.CANCELLED for job in unstarted if job.has_dependents},
                using=using,
                now=now,
                known_parents=True,
                batch_ends=ended,
            )
        if done.asked:
            Job.objects.using(using).filter(pk__in=done.asked).update(
                cancel_requested_at=Coalesce(
                    F("cancel_requested_at"), Value(now, output_field=DateTimeField())
                )
            )
    return done


def cancel_job(
    job_id: uuid.UUID | str, *, now: datetime | None = None, using: str = "default"
) -> Job:
    """Cancel a job.

    A waiting, scheduled or queued job is cancelled at once. A running job is asked to stop:
    its task sees ``context.cancel_requested`` within a heartbeat and ends ``cancelled`` when
    it raises ``JobCancelled`` (see ``context.raise_if_cancelled()``); a task that ignores
    the request finishes normally if it succeeds, and ends ``cancelled``, not retried, if it
    fails. Cancelling a cancelled job does nothing. Raises ``JobNotFoundError`` for an
    unknown id and ``InvalidTransitionError`` for a job that succeeded or failed.
    """
    now = now or timezone.now()
    job = _get(job_id, using)
    if job.status == JobStatus.CANCELLED:
        return job
    # A cancel's cascade may cross an enqueue's locks (see services.deadlocks).
    done = retry_deadlocks(
        lambda: cancel_jobs([job.pk], now=now, using=using), using=using, what="cancel"
    )
    if done.cancelled:
        logger.info("Job %s cancelled", job.pk, extra={"job_id": str(job.pk)})
    elif done.asked:
        logger.info("Job %s asked to cancel", job.pk, extra={"job_id": str(job.pk)})
    job.refresh_from_db(using=using)
    if not (done.cancelled or done.asked) and job.status != JobStatus.CANCELLED:
        raise InvalidTransitionError(f"Job {job.pk} already {job.status}; it cannot be cancelled.")
    return job


def set_progress(
    job_id: uuid.UUID | str,
    *,
    current: float,
    total: float | None = None,
    message: str = "",
    using: str = "default",
) -> dict[str, float | str | None]:
    """Store a running job's progress and return it.

    ``percent`` is derived when ``total`` is known. Raises ``ValueError`` for values that
    make no sense (negative, above ``total``, not finite numbers: NaN and infinities are not
    JSON, and were refused by the database instead, less clearly).
    """
    for value in (current, total):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"progress needs finite numbers, not {value!r}.")
    if current < 0 or (total is not None and (total <= 0 or current > total)):
        raise ValueError("progress needs 0 <= current <= total and total > 0.")
    progress: dict[str, float | str | None] = {
        "current": current,
        "total": total,
        "message": safe_text(message, 500),
    }
    if total:
        progress["percent"] = round(100 * current / total, 2)
    Job.objects.using(using).filter(pk=job_id, status__in=ACTIVE_STATUSES).update(progress=progress)
    return progress


def estimated_row_count(model: type[Model], *, using: str) -> int | None:
    """The planner's estimate of the row count of ``model``'s table (PostgreSQL,
    MariaDB/MySQL), or None where there is none: what the admin shows for a big unfiltered
    list instead of a ``COUNT(*)`` over every row."""
    return db.estimated_row_count(model, using)
