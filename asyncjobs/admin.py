"""Read-only admin pages for jobs, their attempts and workers.

Operators can look; changing jobs goes through the services (retry, cancel), which the admin
actions of a later release will call.
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from asyncjobs import services
from asyncjobs.models import Attempt, Job, QueueState, Schedule, ScheduleTick, Worker


class ReadOnlyMixin:
    """Nothing here is added or edited by hand: jobs change only through the services."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AttemptInline(ReadOnlyMixin, admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "outcome",
        "worker_id",
        "started_at",
        "finished_at",
        "error_class",
        "error_message",
        "http_status",
    )
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "task_path",
        "queue_name",
        "status",
        "attempts",
        "max_attempts",
        "priority",
        "enqueued_at",
        "finished_at",
    )
    list_filter = ("status", "queue_name")
    search_fields = ("=id", "task_path")
    date_hierarchy = "enqueued_at"
    show_full_result_count = False  # no COUNT(*) over the whole table on every page
    inlines = (AttemptInline,)
    readonly_fields = tuple(f.name for f in Job._meta.fields)


@admin.register(Worker)
class WorkerAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "hostname",
        "pid",
        "status",
        "concurrency",
        "jobs_processed",
        "started_at",
        "last_heartbeat_at",
    )
    list_filter = ("status",)
    readonly_fields = tuple(f.name for f in Worker._meta.fields)


@admin.register(QueueState)
class QueueStateAdmin(admin.ModelAdmin):
    """Pause and resume queues (add a row to pause a queue that has none yet)."""

    list_display = ("name", "paused", "changed_at")
    actions = ("pause", "resume")
    fields = ("name", "paused")

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("asyncjobs.pause_queue"))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.set_queue_paused(obj.name, obj.paused, now=timezone.now())

    def _set(self, request: HttpRequest, queryset: QuerySet[QueueState], paused: bool) -> None:
        names = list(queryset.values_list("name", flat=True))
        for name in names:
            services.set_queue_paused(name, paused, now=timezone.now())
        verb = "Paused" if paused else "Resumed"
        self.message_user(request, f"{verb} {len(names)} queue(s).", messages.SUCCESS)

    @admin.action(description="Pause selected queues", permissions=["pause"])
    def pause(self, request: HttpRequest, queryset: QuerySet[QueueState]) -> None:
        self._set(request, queryset, True)

    @admin.action(description="Resume selected queues", permissions=["pause"])
    def resume(self, request: HttpRequest, queryset: QuerySet[QueueState]) -> None:
        self._set(request, queryset, False)


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The cron schedules of ``ASYNCJOBS["SCHEDULES"]`` as the workers last saw them."""

    list_display = ("name", "task_path", "cron", "timezone", "misfire", "last_tick", "next_tick")
    readonly_fields = tuple(f.name for f in Schedule._meta.fields)


@admin.register(ScheduleTick)
class ScheduleTickAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Every tick that was enqueued, with its job."""

    list_display = ("schedule", "tick", "job_id", "enqueued_at")
    list_filter = ("schedule",)
    date_hierarchy = "tick"
    readonly_fields = tuple(f.name for f in ScheduleTick._meta.fields)
