"""The registry of worker processes: registration, heartbeats (which extend the leases of
the jobs a worker runs), stopping, lost workers and the pruning of their rows."""

import os
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils.crypto import get_random_string

from asyncjobs.models import Job, Worker, WorkerStatus


def new_worker_id() -> str:
    """A worker id that says where the worker runs: ``host-pid-random``."""
    host = socket.gethostname().split(".")[0][:40]
    return f"{host}-{os.getpid()}-{get_random_string(8)}"


def register_worker(
    *,
    worker_id: str,
    queues: Sequence[str],
    concurrency: int,
    backend: str,
    now: datetime,
    using: str = "default",
) -> Worker:
    """Create the Worker row of a starting worker process. Again after an error (the worker
    retries while its database is unreachable) it may find the row its last try committed
    though its answer was lost: the row is its own (ids are made per process), and written
    again rather than refused as a duplicate for ever."""
    worker, _ = Worker.objects.using(using).update_or_create(
        id=worker_id,
        defaults={
            "backend": backend,
            "hostname": socket.gethostname()[:255],
            "pid": os.getpid(),
            "queues": list(queues),
            "concurrency": concurrency,
            "started_at": now,
            "last_heartbeat_at": now,
        },
    )
    return worker


def heartbeat(
    *,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    job_ids: Sequence[str] = (),
    finished: int | None = None,
    using: str = "default",
) -> set[str]:
    """Tell the database the worker is alive and extend the leases of the jobs it runs.

    Only ``job_ids``, the jobs the worker knows it holds, are extended: a job claimed in a
    round trip whose answer never arrived is left to expire and be rescued. ``finished``,
    the jobs the worker process has finished so far, becomes its count unless the count is
    already higher: a total rather than an increment, so that a beat whose answer was lost
    and is sent again, or two beats at once (the heartbeat thread's and the stopping
    worker's last), count no job twice, and an older total arriving late lowers nothing.
    Returns the ids among ``job_ids`` that were asked to cancel.
    """
    fields: dict[str, object] = {
        "last_heartbeat_at": now,
        "status": Case(
            When(status=WorkerStatus.LOST, then=Value(WorkerStatus.RUNNING)),
            default=F("status"),
        ),
    }
    if finished is not None:
        fields["jobs_processed"] = Greatest(F("jobs_processed"), Value(finished))
    with transaction.atomic(using=using):
        Worker.objects.using(using).filter(pk=worker_id).update(**fields)
        if not job_ids:
            return set()
        mine = Job.objects.using(using).running().filter(worker_id=worker_id, pk__in=job_ids)
        mine.update(lease_expires_at=now + lease)
        return {
            str(pk)
            for pk in mine.filter(cancel_requested_at__isnull=False).values_list("pk", flat=True)
        }


def set_worker_status(
    worker_id: str, status: WorkerStatus, *, now: datetime, using: str = "default"
) -> None:
    """Record a worker's stopping or stopped state."""
    fields: dict[str, object] = {"status": status, "last_heartbeat_at": now}
    if status == WorkerStatus.STOPPED:
        fields["stopped_at"] = now
    Worker.objects.using(using).filter(pk=worker_id).update(**fields)


def mark_lost_workers(*, now: datetime, stale_after: timedelta, using: str = "default") -> int:
    """Mark workers that stopped heartbeating as lost. Returns how many."""
    return (
        Worker.objects.using(using)
        .stale(now, stale_after)
        .update(status=WorkerStatus.LOST, stopped_at=now)
    )


def prune_workers(*, now: datetime, older_than: timedelta, using: str = "default") -> int:
    """Delete rows of workers that stopped (or were lost) more than ``older_than`` ago."""
    deleted, _ = (
        Worker.objects.using(using)
        .filter(
            status__in=[WorkerStatus.STOPPED, WorkerStatus.LOST], stopped_at__lt=now - older_than
        )
        .delete()
    )
    return deleted
