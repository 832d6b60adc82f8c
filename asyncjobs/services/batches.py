"""Batches: their counters, kept in the transaction of every change of a member job's
status, and their callbacks, fired by the transaction that finishes the batch.

Each function here is a hook that a job transition calls, in its own transaction, after it
moved its jobs (so the job rows are locked before the batch row, on every path):

- ``jobs_added``: jobs stored into a batch (``total`` and ``pending`` go up);
- ``jobs_ended``: jobs reached a terminal status (success, failure for good, cancel, a
  rescue that fails the job); ``pending`` goes down;
- ``jobs_reopened``: failed or cancelled jobs queued again (retry); the batch reopens;
- ``seal_batch``: no more jobs from its creator; a batch with nothing pending finishes.

Finishing a batch happens under its row's lock, in the transaction that brought
``pending`` to zero, so a finish and its callbacks commit together with the job's end or not
at all: nothing is lost when a worker dies in between, and two workers finishing the last
jobs at the same moment queue behind each other on the row, the second seeing the first's
stamps. Each callback fires at most once in the batch's life (``*_fired_at``, set under the
lock); the webhook is sent at each finish.

Successes are the many ends, flushed by every worker at once. On PostgreSQL a flush does not
wait for the batch row's lock while another transaction holds it (that would serialise the
workers' commits, each held across its WAL flush): it leaves its count in a ``BatchTally``
row, which the next holder of the lock adds to the row (``complete_in_batches``). That
holds only while many jobs are left: once a flush sees at most ``LAST_JOBS`` left (the
batch's end is near), it waits for the lock, adds every committed tally and its own, and
finishes the batch if nothing is left. The flush that ends the last job commits after every
other, so when it waits for the lock it sees all their counts. What a stale view could miss
(a flush that saw many jobs left, then took longer to commit than the last ones took to
run) is left as a tally of a sealed batch, which ``finish_stranded`` (the ``Rescuer``'s
round) adds in and finishes.
"""

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q

from asyncjobs import db, retry
from asyncjobs.conf import jobs_settings
from asyncjobs.db.base import Success as Completion
from asyncjobs.exceptions import BatchClosedError
from asyncjobs.models import Batch, BatchTally
from asyncjobs.services.enqueue import build_job, current_owner, enqueue_jobs
from asyncjobs.services.policy import JobOptions
from asyncjobs.services.webhooks import schedule_delivery

BATCH_WEBHOOK_TASK = "asyncjobs.outbound.deliver_batch_webhook"
CALLBACK_NAMES = ("on_complete", "on_success", "on_failure")
# Once a flush sees this few jobs of a batch left, it waits for the batch row's lock rather
# than leave a tally (see the module's docstring). More than the jobs that all workers may
# hold between their claim and their flush's commit, so that the flush that ends the last
# job sees itself near the end; the cost: the flushes of the last jobs take turns.
LAST_JOBS = 1_000


@dataclasses.dataclass(slots=True)
class Ended:
    """How many jobs of one batch ended, by terminal status."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    def add(self, status: str) -> None:
        """Count one job that ended ``status`` (succeeded, failed or cancelled)."""
        name = str(status)
        setattr(self, name, getattr(self, name) + 1)

    @property
    def total(self) -> int:
        """Every job counted."""
        return self.succeeded + self.failed + self.cancelled


def callback_spec(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A callback task's job fields (as ``JobsBackend`` works them out for a task) as JSON,
    to be stored on the batch and turned into a job when the callback fires."""
    options: JobOptions = fields["options"]
    return {
        "task_path": fields["task_path"],
        "queue_name": fields["queue_name"],
        "priority": fields["priority"],
        "backend": fields["backend"],
        "webhook_url": fields.get("webhook_url") or "",
        "task_overrides": fields.get("task_overrides"),
        "limit_key": fields.get("limit_key", ""),
        "limit_concurrency": fields.get("limit_concurrency"),
        "limit_rate": fields.get("limit_rate", ""),
        "options": {
            "max_attempts": options.max_attempts,
            "backoff": options.backoff.to_json(),
            "retry_on": list(options.retry_on),
            "fail_on": list(options.fail_on),
            "timeout": options.timeout.total_seconds() if options.timeout is not None else None,
        },
    }


def create_batch(
    *,
    using: str,
    backend: str,
    now: datetime,
    description: str = "",
    callbacks: Mapping[str, dict[str, Any]] | None = None,
    webhook_url: str = "",
    sealed: bool = False,
) -> Batch:
    """Store a new, empty batch in the caller's transaction (its owner: the user of
    ``enqueued_by``). ``callbacks`` maps ``on_success``/``on_complete``/``on_failure`` to
    ``callback_spec``s. A ``sealed`` batch is finished at once if it stays empty."""
    unknown = set(callbacks or {}) - set(CALLBACK_NAMES)
    if unknown:
        raise ValueError(f"Unknown batch callbacks: {sorted(unknown)}.")
    if webhook_url:
        from asyncjobs import outbound

        outbound._secret()  # fail now, not at delivery, if no secret is configured
        outbound.validate_url(webhook_url)
    owner = current_owner()
    created = Batch(
        backend=backend,
        description=description[:255],
        created_at=now,
        sealed_at=now if sealed else None,
        callbacks=dict(callbacks or {}),
        webhook_url=webhook_url,
        enqueued_by_id=owner.pk if owner is not None else None,
    )
    created.save(using=using, force_insert=True)
    return created


def jobs_added(batch_id: uuid.UUID | str, count: int, *, using: str) -> None:
    """``count`` jobs were stored into the batch, in the caller's transaction, which must be
    the one that stored them. Raises ``BatchClosedError`` (the caller's transaction then
    rolls the jobs back) for a batch that finished or does not exist."""
    if count <= 0:
        return
    moved = (
        Batch.objects.using(using)
        .filter(pk=batch_id, finished_at__isnull=True)
        .update(total=F("total") + count, pending=F("pending") + count)
    )
    if not moved:
        raise BatchClosedError(
            f"Batch {batch_id} has finished (or does not exist): no job can be added to it."
        )


def jobs_ended(ended: Mapping[Any, Ended], *, using: str, now: datetime) -> None:
    """Jobs of these batches reached a terminal status in the caller's transaction: one
    statement per batch (``db.count_batch_ends``), in the order of their ids (two
    transactions ending jobs of the same batches lock them in the same order), and the
    finish of each batch this empties."""
    for batch_id in sorted(ended, key=str):
        counts = ended[batch_id]
        if not counts.total:
            continue
        count = db.count_batch_ends(
            using,
            batch_id,
            succeeded=counts.succeeded,
            failed=counts.failed,
            cancelled=counts.cancelled,
        )
        if count is not None and count.finishable:
            _finish_if_done(batch_id, using=using, now=now)


def complete_in_batches(
    items: Sequence[Completion], *, worker_id: str, using: str
) -> dict[Any, bool]:
    """running → succeeded for a flush that holds jobs of batches (``db.complete_succeeded``
    otherwise), in the caller's transaction: the batches' counts move with it (in the same
    statement on PostgreSQL when they are of one batch), and each batch this empties
    finishes. Near a batch's end (``LAST_JOBS``) a count that went into a tally is added to
    the row under its lock, waiting for the transaction that holds it. Returns what
    ``db.complete_succeeded`` returns: the jobs recorded, each with whether it has
    dependents."""
    recorded, counted = db.complete_succeeded_counting(using, items, worker_id=worker_id)
    now = max(finished for *_, finished in items)
    for count in sorted(counted, key=lambda count: str(count.batch_id)):
        if not count.held:
            if count.finished or count.pending > LAST_JOBS:
                continue
            # The end is near: wait for the row, add every tally committed meanwhile.
            settled = db.count_batch_ends(using, count.batch_id)
            if settled is None:
                continue
            count = settled
        if count.finishable:
            _finish_if_done(count.batch_id, using=using, now=now)
    return recorded


def finish_stranded(*, now: datetime, using: str = "default", limit: int = 100) -> int:
    """Add the tallies of sealed, unfinished batches to their rows, and finish those with
    nothing left: the safety net for a count whose flush saw the batch's end far away (see
    the module's docstring). One short transaction per batch, under its row's lock (the
    callbacks still fire once). Returns how many batches it finished."""
    stranded = list(
        Batch.objects.using(using)
        .filter(sealed_at__isnull=False, finished_at__isnull=True)
        .filter(Q(pending=0) | Exists(BatchTally.objects.filter(batch=OuterRef("pk"))))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    finished = 0
    for batch_id in stranded:
        with transaction.atomic(using=using):
            count = db.count_batch_ends(using, batch_id)
            if count is not None and count.finishable:
                _finish_if_done(batch_id, using=using, now=now)
                finished += 1
    return finished


def jobs_reopened(reopened: Mapping[Any, Ended], *, using: str) -> None:
    """Failed or cancelled jobs of these batches were queued again (a retry) in the caller's
    transaction: they are pending again, and a finished batch is running again (its
    callbacks that fired stay fired)."""
    for batch_id in sorted(reopened, key=str):
        counts = reopened[batch_id]
        if not counts.total:
            continue
        Batch.objects.using(using).filter(pk=batch_id).update(
            pending=F("pending") + counts.total,
            failed=F("failed") - counts.failed,
            cancelled=F("cancelled") - counts.cancelled,
            succeeded=F("succeeded") - counts.succeeded,
            finished_at=None,
        )


def seal_batch(batch_id: uuid.UUID | str, *, using: str, now: datetime) -> bool:
    """Seal the batch: from now on, the end of its last pending job finishes it (an empty
    batch finishes here). Returns False if it was sealed already."""
    with transaction.atomic(using=using):
        sealed = (
            Batch.objects.using(using)
            .filter(pk=batch_id, sealed_at__isnull=True)
            .update(sealed_at=now)
        )
        if sealed:
            count = db.count_batch_ends(using, batch_id)  # (adds the tallies left so far)
            if count is not None and count.finishable:
                _finish_if_done(batch_id, using=using, now=now)
    return bool(sealed)


def _finish_if_done(batch_id: Any, *, using: str, now: datetime) -> None:
    """Finish the batch if it is sealed and nothing of it is pending: stamp it, enqueue the
    callbacks due and the webhook. The caller holds the batch row's lock and added its
    tallies (``db.count_batch_ends`` or a flush's count that held the row, in this
    transaction), so this read sees the latest counts and no other transaction can finish
    the batch at the same time."""
    batch = (
        Batch.objects.using(using)
        .filter(pk=batch_id, pending=0, sealed_at__isnull=False, finished_at__isnull=True)
        .first()
    )
    if batch is None:
        return
    batch.finished_at = now
    stamps: dict[str, datetime] = {"finished_at": now}
    due = []
    if batch.complete_fired_at is None:
        due.append("on_complete")
        stamps["complete_fired_at"] = now
    if batch.failed or batch.cancelled:
        if batch.failure_fired_at is None:
            due.append("on_failure")
            stamps["failure_fired_at"] = now
    elif batch.success_fired_at is None:
        due.append("on_success")
        stamps["success_fired_at"] = now
    Batch.objects.using(using).filter(pk=batch.pk).update(**stamps)
    for name, value in stamps.items():
        setattr(batch, name, value)
    summary = batch_summary(batch)
    for name in due:
        spec = batch.callbacks.get(name)
        if spec:
            _enqueue_callback(batch, spec, summary, using=using, now=now)
    if batch.webhook_url:
        _schedule_batch_webhook(batch, using=using, now=now)


def batch_summary(batch: Batch) -> dict[str, Any]:
    """What a batch's callbacks receive as their second argument: its counts and state."""
    return {
        "state": str(batch.state),
        "description": batch.description,
        "total": batch.total,
        "succeeded": batch.succeeded,
        "failed": batch.failed,
        "cancelled": batch.cancelled,
    }


def _enqueue_callback(
    batch: Batch, spec: dict[str, Any], summary: dict[str, Any], *, using: str, now: datetime
) -> None:
    """Enqueue one callback of ``batch``: its task, called as ``task(batch_id, summary)``."""
    options = spec["options"]
    timeout = options.get("timeout")
    job = build_job(
        task_path=spec["task_path"],
        args=[str(batch.pk), summary],
        kwargs={},
        queue_name=spec["queue_name"],
        priority=spec["priority"],
        run_after=None,
        backend=spec.get("backend") or batch.backend,
        options=JobOptions(
            max_attempts=options["max_attempts"],
            backoff=retry.from_json(options["backoff"]),
            retry_on=tuple(options["retry_on"]),
            fail_on=tuple(options["fail_on"]),
            timeout=timedelta(seconds=timeout) if timeout is not None else None,
        ),
        now=now,
        webhook_url=spec.get("webhook_url") or "",
        limit_key=spec.get("limit_key") or "",
        limit_concurrency=spec.get("limit_concurrency"),
        limit_rate=spec.get("limit_rate") or "",
        task_overrides=spec.get("task_overrides"),
    )
    job.enqueued_by_id = batch.enqueued_by_id
    enqueue_jobs([job], using=using, now=now)


def _schedule_batch_webhook(batch: Batch, *, using: str, now: datetime) -> None:
    """Enqueue the delivery of the batch's webhook (a job of its own, retried like a job's
    webhook, through the same guarded client)."""
    schedule_delivery(
        BATCH_WEBHOOK_TASK,
        {"batch_id": str(batch.pk), "url": batch.webhook_url},
        queue=jobs_settings.WEBHOOK_QUEUE or "default",
        priority=0,
        backend=batch.backend,
        enqueued_by_id=batch.enqueued_by_id,
        now=now,
        using=using,
    )
