"""Workers, with their health from the last heartbeat and the jobs they hold."""

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils import timezone

from asyncjobs.admin.display import ReadOnlyMixin, badge, precise_time
from asyncjobs.conf import jobs_settings
from asyncjobs.models import Job, Worker, WorkerStatus


@admin.register(Worker)
class WorkerAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "health",
        "jobs_in_hand",
        "jobs_processed",
        "started",
        "last_heartbeat",
    )
    list_filter = ("status",)
    ordering = ("-started_at",)
    readonly_fields = tuple(f.name for f in Worker._meta.fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        in_hand = (
            Job.objects.running()
            .filter(worker_id=OuterRef("pk"))
            .values("worker_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return super().get_queryset(request).annotate(in_hand=Subquery(in_hand))

    @admin.display(description="started at", ordering="started_at")
    def started(self, obj: Worker) -> str:
        return precise_time(obj.started_at)

    @admin.display(description="last heartbeat", ordering="last_heartbeat_at")
    def last_heartbeat(self, obj: Worker) -> str:
        return precise_time(obj.last_heartbeat_at, date=False)

    @admin.display(description="jobs in hand")
    def jobs_in_hand(self, obj: Any) -> int:
        return int(getattr(obj, "in_hand", None) or 0)

    @admin.display(description="health")
    def health(self, obj: Worker) -> str:
        if obj.status in (WorkerStatus.STOPPED, WorkerStatus.LOST):
            return badge(
                "cancelled" if obj.status == WorkerStatus.STOPPED else "failed", obj.status
            )
        age = timezone.now() - obj.last_heartbeat_at
        if age > jobs_settings.LEASE_DURATION:
            return badge("failed", f"stale ({int(age.total_seconds())}s)")
        if age > jobs_settings.HEARTBEAT_INTERVAL * 2 + timedelta(seconds=1):
            return badge("queued", f"late ({int(age.total_seconds())}s)")
        return badge("succeeded", obj.status)
