"""Batches built by hand for the API and admin tests: rows and counters as the batch code
keeps them, without running the jobs."""

import uuid
from datetime import timedelta

from django.utils import timezone

from asyncjobs.models import Batch, Job, JobStatus

TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def make_batch(*, statuses=(), owner=None, sealed=True, description="import", **fields):
    """A batch holding one job per entry of ``statuses`` (a job status each), its counters
    matching them; failed jobs carry an error. ``sealed=False`` leaves it open."""
    now = timezone.now()
    batch = Batch.objects.create(
        description=description,
        enqueued_by=owner,
        created_at=now - timedelta(minutes=1),
        sealed_at=now - timedelta(seconds=50) if sealed else None,
        **fields,
    )
    jobs = []
    for i, status in enumerate(statuses):
        ended = status in TERMINAL
        jobs.append(
            Job(
                id=uuid.uuid4(),
                task_path="tests.tasks.add",
                args=[i, i],
                status=status,
                batch=batch,
                enqueued_by=owner,
                enqueued_at=batch.created_at,
                run_after=batch.created_at,
                finished_at=now - timedelta(seconds=len(statuses) - i) if ended else None,
                attempts=1 if ended or status == JobStatus.RUNNING else 0,
                last_error_class="builtins.ValueError" if status == JobStatus.FAILED else "",
                last_error_message=f"row {i} is bad" if status == JobStatus.FAILED else "",
            )
        )
    Job.objects.bulk_create(jobs)
    counts = {s: sum(1 for x in statuses if x == s) for s in TERMINAL}
    batch.total = len(statuses)
    batch.succeeded = counts[JobStatus.SUCCEEDED]
    batch.failed = counts[JobStatus.FAILED]
    batch.cancelled = counts[JobStatus.CANCELLED]
    batch.pending = batch.total - sum(counts.values())
    if sealed and not batch.pending:
        batch.finished_at = now
    batch.save()
    return batch
