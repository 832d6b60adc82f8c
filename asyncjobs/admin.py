"""Read-only admin pages for jobs, their attempts and workers.

Operators can look; changing jobs goes through the services (retry, cancel), which the admin
actions of a later release will call.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from asyncjobs.models import Attempt, Job, Worker


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
