"""What the dashboard and the metrics endpoint show, read from the job tables.

Every query here is served by an index (the partial indexes on ready and running jobs,
``(status, finished_at)`` for every status, and the partial index of ended attempts), so the
numbers stay cheap with millions of finished jobs.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.db.models.functions import TruncMinute

from asyncjobs.conf import jobs_settings
from asyncjobs.models import ACTIVE_STATUSES, Attempt, Batch, Job, JobStatus, QueueState, Worker

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class QueueSnapshot:
    """The state of one queue."""

    name: str
    waiting: int = 0  # for the jobs they depend on
    scheduled: int = 0
    queued: int = 0
    running: int = 0
    failed: int = 0
    succeeded_last_hour: int = 0
    failed_last_hour: int = 0
    lag_seconds: float | None = None
    paused: bool = False


@dataclass
class Snapshot:
    """Queues, workers and last hour's throughput at ``now``."""

    now: datetime
    queues: list[QueueSnapshot]
    workers: list[dict[str, Any]]
    # Per minute of the last hour, oldest first: (minute, succeeded, failed).
    throughput: list[tuple[datetime, int, int]] = field(default_factory=list)


def _job_backends(using: str) -> list[Any]:
    """The task backends that store their jobs in database ``using``."""
    from asyncjobs.tasks_api import task_backends

    return [b for b in task_backends.all() if getattr(b, "database", None) == using]


def configured_queues(*, using: str = "default") -> set[str]:
    """The queues the project configured for the jobs in database ``using``: the ``QUEUES``
    of every task backend that stores its jobs there, the keys of ``ASYNCJOBS["QUEUES"]``
    and ``WEBHOOK_QUEUE``. The dashboard, the metrics and ``/jobs/stats/`` list each of them,
    whether it holds jobs or not."""
    names = set(jobs_settings.QUEUES)
    if jobs_settings.WEBHOOK_QUEUE:
        names.add(jobs_settings.WEBHOOK_QUEUE)
    for backend in _job_backends(using):
        names |= set(backend.queues)
    return names


def accepts_any_queue(*, using: str = "default") -> bool:
    """Whether a backend storing jobs in ``using`` takes every queue name (empty ``QUEUES``,
    as ``django.tasks`` allows), so that any name may be a queue."""
    return any(not backend.queues for backend in _job_backends(using))


def queue_snapshots(*, now: datetime, using: str = "default") -> list[QueueSnapshot]:
    """The state of every queue, by name: the configured ones (``configured_queues``), those
    holding waiting, running or failed jobs, and the paused ones. The one source of the
    dashboard's, the metrics' and ``/jobs/stats/``'s queue lists."""
    jobs = Job.objects.using(using)
    queues = {name: QueueSnapshot(name=name) for name in configured_queues(using=using)}

    def queue(name: str) -> QueueSnapshot:
        return queues.setdefault(name, QueueSnapshot(name=name))

    waiting = (
        jobs.filter(status__in=ACTIVE_STATUSES)
        .values("queue_name", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in waiting:
        setattr(queue(row["queue_name"]), row["status"], row["n"])
    for dead in jobs.dead_letter().values("queue_name").annotate(n=Count("pk")).order_by():
        queue(dead["queue_name"]).failed = dead["n"]
    hour_ago = now - timedelta(hours=1)
    recent = (
        jobs.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED], finished_at__gte=hour_ago)
        .values("queue_name", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for done in recent:
        setattr(queue(done["queue_name"]), f"{done['status']}_last_hour", done["n"])
    for ready in jobs.ready().values("queue_name").annotate(oldest=Min("run_after")).order_by():
        queue(ready["queue_name"]).lag_seconds = max((now - ready["oldest"]).total_seconds(), 0.0)
    for state in QueueState.objects.using(using).filter(paused=True):
        queue(state.name).paused = True
    return sorted(queues.values(), key=lambda q: q.name)


def snapshot(*, now: datetime, using: str = "default") -> Snapshot:
    """Read the current state of every queue, the workers, and last hour's throughput."""
    jobs = Job.objects.using(using)
    hour_ago = now - timedelta(hours=1)
    per_minute: dict[datetime, list[int]] = {}
    rows = (
        jobs.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED], finished_at__gte=hour_ago)
        .annotate(minute=TruncMinute("finished_at"))
        .values("minute", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for bucket in rows:
        slot = per_minute.setdefault(bucket["minute"], [0, 0])
        slot[0 if bucket["status"] == JobStatus.SUCCEEDED else 1] += bucket["n"]
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    throughput = []
    for i in range(60):
        minute = start + timedelta(minutes=i)
        ok, bad = per_minute.get(minute, [0, 0])
        throughput.append((minute, ok, bad))

    stale_after = jobs_settings.LEASE_DURATION
    workers = []
    for w in Worker.objects.using(using).alive(now, stale_after * 10).order_by("hostname", "pid"):
        age = (now - w.last_heartbeat_at).total_seconds()
        workers.append(
            {
                "id": w.id,
                "hostname": w.hostname,
                "pid": w.pid,
                "queues": w.queues,
                "concurrency": w.concurrency,
                "status": w.status,
                "heartbeat_age": age,
                "healthy": age <= stale_after.total_seconds(),
                "jobs_processed": w.jobs_processed,
            }
        )
    return Snapshot(
        now=now,
        queues=queue_snapshots(now=now, using=using),
        workers=workers,
        throughput=throughput,
    )


def dashboard_batches(
    *, now: datetime, using: str = "default", unfinished: int = 10, finished: int = 5
) -> list[Batch]:
    """The batches the dashboard shows: the latest ``unfinished`` ones not finished (open or
    running), then the ``finished`` ones that finished last in the last hour. Two short
    reads through the batch indexes (``created_at``, ``finished_at``)."""
    batches = Batch.objects.using(using).counted()
    running = list(batches.filter(finished_at__isnull=True).order_by("-created_at")[:unfinished])
    recent = list(
        batches.filter(finished_at__gte=now - timedelta(hours=1)).order_by("-finished_at")[
            :finished
        ]
    )
    return running + recent


METRICS_WINDOW = timedelta(minutes=5)


def _recent_attempts(now: datetime, using: str) -> Any:
    return Attempt.objects.using(using).filter(finished_at__gte=now - METRICS_WINDOW)


def duration_histogram(*, now: datetime, using: str = "default") -> tuple[list[int], float, int]:
    """Attempts that finished in the last ``METRICS_WINDOW``: cumulative counts per
    ``DURATION_BUCKETS`` bound (plus +Inf), the sum of their durations in seconds, and their
    count. Aggregated in the database."""
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    buckets = {
        f"le{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(DURATION_BUCKETS)
    }
    row = (
        _recent_attempts(now, using)
        .annotate(duration=duration)
        .aggregate(total=Count("pk"), seconds=Sum("duration"), **buckets)
    )
    counts = [int(row[f"le{i}"]) for i in range(len(DURATION_BUCKETS))]
    total = int(row["total"])
    seconds = row["seconds"].total_seconds() if row["seconds"] else 0.0
    return [*counts, total], seconds, total


def outcomes_recent(*, now: datetime, using: str = "default") -> dict[str, int]:
    """Attempts that finished in the last ``METRICS_WINDOW``, by outcome."""
    return dict(
        _recent_attempts(now, using)
        .values("outcome")
        .annotate(n=Count("pk"))
        .values_list("outcome", "n")
        .order_by()
    )
