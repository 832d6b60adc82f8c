"""Operations on the whole of a batch: "cancel the rest" (``cancel_batch``), however many jobs
it holds.

The jobs are cancelled a chunk at a time (``CANCEL_CHUNK`` jobs, each chunk its own short
transaction through ``operator.cancel_jobs``, the one cancel transition), so no lock is held
on many jobs, or for long, and enqueues and workers go on between chunks. The batch's
counters, its dependents' cancels and its finish move with each chunk as they do for a
single cancel. Running jobs are asked to stop; the batch finishes when the last of them ends.

A batch with few unfinished jobs (``CANCEL_INLINE_LIMIT``) is cancelled in the caller's
request; the rest of a bigger one is handed to a job (``cancel_batch_task``, one per batch at
a time: a unique key), on the queue of the batch's own jobs, at the highest priority: a
request must answer in seconds, and a job survives a lost request or a dead worker (it is
run again, and cancelling is idempotent). Running it twice, or beside workers ending the same
jobs, is safe: each chunk locks its jobs and moves only those still unfinished.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.utils import timezone

from asyncjobs.exceptions import BatchNotFoundError
from asyncjobs.models import UNSTARTED_STATUSES, Batch, Job, JobStatus
from asyncjobs.outbound.base import TaskContext, internal_task
from asyncjobs.services.deadlocks import retry_deadlocks
from asyncjobs.services.enqueue import build_job, enqueue_jobs
from asyncjobs.services.operator import cancel_jobs
from asyncjobs.services.policy import resolve_options
from asyncjobs.services.queues import PermissionHolder

logger = logging.getLogger(__name__)

CANCEL_PERMISSION = "asyncjobs.cancel_job"
CANCEL_BATCH_TASK = "asyncjobs.services.bulk.cancel_batch_task"
# Jobs per transaction: short enough that no enqueue or worker waits long for a chunk's
# locks, big enough that a batch of 100,000 is 200 transactions.
CANCEL_CHUNK = 500
# Unfinished jobs a request cancels itself (two chunks); past it, a job does the rest.
CANCEL_INLINE_LIMIT = 1000
# A bound on one attempt of the job, whatever the queue's TIMEOUT (a few seconds per 10,000).
CANCEL_JOB_TIMEOUT = timedelta(hours=1)


def can_cancel_jobs(user: PermissionHolder | None) -> bool:
    """Whether ``user`` may cancel jobs, one or a batch's at once: ``asyncjobs.cancel_job``
    (superusers have it). The check behind the admin's cancels and ``cancel_batch``."""
    return bool(user is not None and user.has_perm(CANCEL_PERMISSION))


@dataclass(slots=True)
class BatchCancel:
    """What a "cancel the rest" did: jobs ``cancelled``, running jobs ``asked`` to stop, and
    the job that cancels the rest (``job_id``) if it was handed to one."""

    cancelled: int = 0
    asked: int = 0
    job_id: uuid.UUID | None = None

    @property
    def handed_over(self) -> bool:
        """Whether a job cancels what this call left."""
        return self.job_id is not None


def _unfinished(batch_id: Any, using: str) -> Any:
    """The batch's jobs that a cancel still moves: not started, or running and not asked to
    stop yet (through the ``(batch, status)`` index)."""
    return Job.objects.using(using).filter(
        Q(status__in=UNSTARTED_STATUSES)
        | Q(status=JobStatus.RUNNING, cancel_requested_at__isnull=True),
        batch_id=batch_id,
    )


def cancel_batch_jobs(
    batch_id: Any,
    *,
    now: datetime | None,
    using: str = "default",
    limit: int | None = None,
    chunk: int | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[BatchCancel, bool]:
    """Cancel the unfinished jobs of the batch ``batch_id``, ``chunk`` (``CANCEL_CHUNK``) at a
    time, each chunk its own transaction (``operator.cancel_jobs``), until none is left or
    ``limit`` jobs were looked at. ``between`` is called before each chunk (a job checks
    there whether it was asked to stop). ``now``: the time each cancel records; None reads
    the clock at each chunk (a job that runs for minutes). Returns what was done, and
    whether unfinished jobs remain."""
    chunk = chunk or CANCEL_CHUNK
    done = BatchCancel()
    seen = 0
    while limit is None or seen < limit:
        size = chunk if limit is None else min(chunk, limit - seen)
        pks = list(_unfinished(batch_id, using).order_by().values_list("pk", flat=True)[:size])
        if not pks:
            return done, False
        if between is not None:
            between()
        at = now or timezone.now()
        # A chunk's cascade may cross a worker's or an enqueue's locks (services.deadlocks).
        moved = retry_deadlocks(
            lambda: cancel_jobs(pks, now=at, using=using),  # noqa: B023 (run at once)
            using=using,
            what=f"cancel the rest of batch {batch_id}",
        )
        done.cancelled += len(moved.cancelled)
        done.asked += len(moved.asked)
        seen += len(pks)
    return done, _unfinished(batch_id, using).exists()


def cancel_batch(
    batch_id: uuid.UUID | str,
    *,
    now: datetime | None = None,
    using: str = "default",
    user: PermissionHolder | None = None,
    inline_limit: int | None = None,
) -> BatchCancel:
    """Cancel the rest of a batch: every job of it not finished yet is cancelled (waiting,
    scheduled, queued) or asked to stop (running), as ``cancel_job`` does to one job, with
    the batch's counters and its dependents' cancels; the batch finishes (its callbacks fire,
    once) when its last job ends. The one path of the admin's page and action.

    Up to ``inline_limit`` (``CANCEL_INLINE_LIMIT``) jobs are cancelled in this call; the
    rest are handed to a job of their own (``BatchCancel.job_id``). Parameters:
    ``batch_id``; ``now``; ``using``, the database alias; ``user``, the user acting (the
    admin): ``PermissionDenied`` unless ``can_cancel_jobs(user)`` (None, for code, checks
    nothing). Raises ``BatchNotFoundError`` for an unknown batch. Safe to call again, and
    while workers end the same jobs."""
    if user is not None and not can_cancel_jobs(user):
        raise PermissionDenied("Cancelling jobs needs asyncjobs.cancel_job.")
    now = now or timezone.now()
    batch = _get_batch(batch_id, using)
    limit = CANCEL_INLINE_LIMIT if inline_limit is None else inline_limit
    done, more = cancel_batch_jobs(batch.pk, now=now, using=using, limit=limit)
    if more:
        done.job_id = _hand_over(batch, now=now, using=using)
    logger.info(
        "Batch %s: cancel the rest by %s: %d cancelled, %d asked to stop%s",
        batch.pk,
        _who(user),
        done.cancelled,
        done.asked,
        f", the rest handed to job {done.job_id}" if done.job_id else "",
        extra={
            "batch_id": str(batch.pk),
            "user": _who(user),
            "cancelled": done.cancelled,
            "asked": done.asked,
            "job_id": str(done.job_id) if done.job_id else None,
        },
    )
    return done


def _get_batch(batch_id: Any, using: str) -> Batch:
    try:
        batch = Batch.objects.using(using).filter(pk=batch_id).first()
    except (ValidationError, ValueError, TypeError) as exc:  # malformed: as unknown as missing
        raise BatchNotFoundError(f"No batch with id {batch_id!r}.") from exc
    if batch is None:
        raise BatchNotFoundError(f"No batch with id {batch_id!r}.")
    return batch


def _who(user: PermissionHolder | None) -> str:
    if user is None:
        return "code"
    name = getattr(user, "get_username", None)
    return str(name()) if callable(name) else str(user)


def _hand_over(batch: Batch, *, now: datetime, using: str) -> uuid.UUID:
    """Enqueue ``cancel_batch_task`` for the batch, unless one is waiting or running for it
    already (its unique key): the id of the job that cancels the rest."""
    queue = (
        _unfinished(batch.pk, using).order_by().values_list("queue_name", flat=True).first()
        or "default"
    )
    job = build_job(
        task_path=CANCEL_BATCH_TASK,
        args=(),
        kwargs={"batch_id": str(batch.pk)},
        queue_name=queue,
        priority=100,  # before the jobs it cancels
        run_after=None,
        backend=batch.backend,
        # Each attempt keeps what its chunks did: a retry goes on from there.
        options=resolve_options(
            queue, max_attempts=5, retry_on=(Exception,), timeout=CANCEL_JOB_TIMEOUT
        ),
        now=now,
        unique_key=_cancel_key(batch.pk),
    )
    job.enqueued_by_id = batch.enqueued_by_id
    return enqueue_jobs([job], using=using, now=now)[0].pk


def _cancel_key(batch_id: Any) -> str:
    return f"asyncjobs:cancel-batch:{batch_id}"


def batch_cancel_job(batch_id: Any, *, using: str = "default") -> Job | None:
    """The job cancelling the rest of the batch now (waiting or running), if there is one:
    what the admin's batch page shows."""
    return (
        Job.objects.using(using)
        .filter(unique_key=_cancel_key(batch_id), task_path=CANCEL_BATCH_TASK)
        .active()
        .only("id", "status")
        .first()
    )


@internal_task(takes_context=True)
def cancel_batch_task(context: TaskContext, batch_id: str) -> dict[str, int]:
    """The job that cancels the rest of a big batch (``cancel_batch``): chunk after chunk
    until none is left. Cancelling this job stops it between two chunks."""
    done, _ = cancel_batch_jobs(
        batch_id, now=None, using=context.database, between=context.raise_if_cancelled
    )
    logger.info(
        "Batch %s: the rest cancelled by job %s: %d cancelled, %d asked to stop",
        batch_id,
        context.job_id,
        done.cancelled,
        done.asked,
        extra={"batch_id": batch_id, "job_id": context.job_id},
    )
    return {"cancelled": done.cancelled, "asked": done.asked}
