"""Deleting finished jobs: an operator's discard and the retention pruning, both in short
transactions that skip rows another transaction holds."""

import time
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from asyncjobs.models import TERMINAL_STATUSES, Batch, Job


def discard_jobs(jobs: QuerySet[Job]) -> int:
    """Delete the finished jobs (and their attempts) of the queryset ``jobs``; jobs still
    waiting or running are left alone, and so is a job that another transaction holds (being
    retried, say). Returns how many jobs were deleted."""
    using = jobs.db
    ids = list(jobs.filter(status__in=TERMINAL_STATUSES).values_list("pk", flat=True))
    return sum(
        _delete_finished(Job.objects.using(using).filter(pk__in=ids[start : start + 500]), 500)
        for start in range(0, len(ids), 500)
    )


def _delete_finished(jobs: QuerySet[Job], limit: int) -> int:
    """Delete at most ``limit`` finished jobs of the queryset ``jobs``, those that finished
    first, with their attempts, in one transaction. The rows are locked first and rows another
    transaction holds are skipped (PostgreSQL; SQLite has one writer), so a job retried
    meanwhile is either queued again before this, and left alone, or deleted first, and the
    retry finds no job. Returns how many were deleted."""
    using = jobs.db
    with transaction.atomic(using=using):
        ids = list(
            jobs.filter(status__in=TERMINAL_STATUSES)
            .order_by("finished_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        _, per_model = Job.objects.using(using).filter(pk__in=ids).only("pk").delete()
        return per_model.get(Job._meta.label, 0)


def prune_jobs(
    *,
    now: datetime,
    older_than: dict[str, timedelta | None],
    batch_size: int = 500,
    max_batches: int | None = None,
    time_limit: timedelta | None = None,
    dry_run: bool = False,
    using: str = "default",
) -> dict[str, int]:
    """Delete finished jobs (and their attempts) that finished before ``now - age``.

    ``older_than`` maps a terminal status to its age (None keeps that status). Deletes the
    oldest first, in batches of ``batch_size``, each in its own short transaction, so it never
    holds long locks or slows the claim query. The statuses take turns, a batch each, so that
    a large backlog of one does not keep the others from being pruned. Stops when nothing old
    is left, or a status has had ``max_batches`` batches; past ``time_limit`` no new batch
    starts (the first one always does). With ``dry_run`` it only counts. Returns the number
    per status.
    """
    counts: dict[str, int] = {}
    cutoffs: dict[str, datetime] = {}
    for status, age in older_than.items():
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"Only finished jobs can be pruned, not {status!r}.")
        if age is not None:
            cutoffs[status] = now - age
            counts[status] = 0
    if dry_run:
        return {
            status: Job.objects.using(using).filter(status=status, finished_at__lt=cutoff).count()
            for status, cutoff in cutoffs.items()
        }
    stop_at = None if time_limit is None else time.monotonic() + time_limit.total_seconds()
    batches = dict.fromkeys(cutoffs, 0)
    while cutoffs:
        for status, cutoff in list(cutoffs.items()):
            old = Job.objects.using(using).filter(status=status, finished_at__lt=cutoff)
            deleted = _delete_finished(old, batch_size)
            counts[status] += deleted
            batches[status] += 1
            if deleted < batch_size or batches[status] == max_batches:
                del cutoffs[status]
            if stop_at is not None and time.monotonic() >= stop_at:
                return counts
    return counts


def prune_batches(
    *, now: datetime, older_than: timedelta, using: str = "default", limit: int = 500
) -> int:
    """Delete finished batches that finished before ``now - older_than`` and have no job
    left (their jobs are pruned first, by their own retention), at most ``limit`` in one
    short transaction. A batch still open or running is never deleted, and a batch whose jobs
    are kept stays with them. Returns how many were deleted."""
    with transaction.atomic(using=using):
        ids = list(
            Batch.objects.using(using)
            .filter(finished_at__lt=now - older_than)
            .exclude(Exists(Job.objects.using(using).filter(batch_id=OuterRef("pk"))))
            .order_by("finished_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        # (a retry reopening one of them meanwhile needs one of its jobs, which is gone)
        return Batch.objects.using(using).filter(pk__in=ids).delete()[0]


def batch_retention(older_than: dict[str, timedelta | None]) -> timedelta | None:
    """How long finished batches are kept, given the jobs' retention per status: the
    shortest (a batch also waits for its last job to be pruned); None keeps them."""
    ages = [age for age in older_than.values() if age is not None]
    return min(ages) if ages else None
