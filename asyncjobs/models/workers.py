"""Worker processes, and the named leases they take (the maintenance lock)."""

from datetime import datetime, timedelta
from typing import ClassVar

from django.db import models, transaction
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class WorkerStatus(models.TextChoices):
    """What a worker process is doing, as far as the database knows."""

    RUNNING = "running", _("Running")
    STOPPING = "stopping", _("Stopping")
    STOPPED = "stopped", _("Stopped")
    LOST = "lost", _("Lost")  # stopped heartbeating without saying goodbye


class WorkerQuerySet(models.QuerySet["Worker"]):
    """Worker queries named after states."""

    def alive(self, now: datetime, stale_after: timedelta) -> "WorkerQuerySet":
        """Workers that heartbeated within ``stale_after`` of ``now`` and have not stopped."""
        return self.filter(
            status__in=[WorkerStatus.RUNNING, WorkerStatus.STOPPING],
            last_heartbeat_at__gte=now - stale_after,
        )

    def stale(self, now: datetime, stale_after: timedelta) -> "WorkerQuerySet":
        """Workers that claim to run but have not heartbeated within ``stale_after``."""
        return self.filter(
            status__in=[WorkerStatus.RUNNING, WorkerStatus.STOPPING],
            last_heartbeat_at__lt=now - stale_after,
        )


class Worker(models.Model):
    """A ``runworker`` process, kept alive by heartbeats."""

    id = models.CharField(max_length=64, primary_key=True)
    backend = models.CharField(max_length=100, default="default")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=WorkerStatus.choices, default=WorkerStatus.RUNNING
    )
    started_at = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    jobs_processed = models.PositiveBigIntegerField(default=0)

    objects: ClassVar[WorkerQuerySet] = WorkerQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")

    def __str__(self) -> str:
        return self.id


class LeaseQuerySet(models.QuerySet["Lease"]):
    def take(self, name: str, *, holder: str, duration: timedelta, now: datetime) -> bool:
        """Take the lease ``name`` for ``holder`` until ``now + duration``; True if it is
        now ``holder``'s (it was free, expired, or ``holder``'s already). One short
        transaction of plain row writes: it works through any connection pooler and on
        every database."""
        with transaction.atomic(using=self.db):
            self.get_or_create(name=name)
            free = Q(expires_at__isnull=True) | Q(expires_at__lte=now) | Q(holder=holder)
            taken = self.filter(free, name=name).update(holder=holder, expires_at=now + duration)
        return taken == 1

    def end(self, name: str, *, holder: str) -> bool:
        """End ``holder``'s lease ``name``; False (changing nothing) if it is not theirs."""
        return self.filter(name=name, holder=holder).update(holder="", expires_at=None) == 1


class Lease(models.Model):
    """A named lease that one holder at a time may take, until it ends it or it expires
    (the workers' maintenance lock). A row, not a session lock, so that it holds through a
    transaction-pooling connection pooler (PgBouncer), where a session belongs to nobody."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=255, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        verbose_name = _("lease")
        verbose_name_plural = _("leases")

    def __str__(self) -> str:
        return self.name
