"""Not started → cancelled: the one write of that transition (``mark_cancelled``), shared by
an operator's cancel (``operator.cancel_jobs``) and the dependency cascade
(``dependencies._cancel``)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from asyncjobs.models import Job, JobStatus
from asyncjobs.services import batches
from asyncjobs.services.webhooks import schedule_webhook

# What a cancel reads of a job: its state, its batch, whether it has dependents, and what its
# webhook needs.
CANCEL_FIELDS = (
    "id", "status", "batch", "has_dependents", "webhook_url", "task_path", "queue_name",
    "priority", "backend", "enqueued_by",
)  # fmt: skip


def mark_cancelled(
    jobs: Sequence[Job],
    batch_ends: dict[Any, batches.Ended],
    *,
    using: str,
    now: datetime,
    **why: Any,
) -> None:
    """Not started → cancelled: the one write of that transition, for an operator's cancel
    (``operator.cancel_jobs``) and for the cascade's (``_cancel``). ``jobs`` (read with
    ``CANCEL_FIELDS``, locked by the caller, none started) are stamped finished, their unique
    keys freed, ``why``'s fields set; their webhooks are enqueued and they are counted into
    ``batch_ends`` (moved by the caller once every job row is locked: job rows before batch
    rows). Their dependents are the caller's (``job_ended``)."""
    if not jobs:
        return
    Job.objects.using(using).filter(pk__in=[job.pk for job in jobs]).update(
        status=JobStatus.CANCELLED, finished_at=now, unique_key=None, **why
    )
    for job in jobs:
        job.status, job.finished_at = JobStatus.CANCELLED, now
        schedule_webhook(job, now=now, using=using)
        if job.batch_id is not None:
            batch_ends.setdefault(job.batch_id, batches.Ended()).cancelled += 1
