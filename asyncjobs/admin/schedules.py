"""Cron schedules and the ticks they enqueued, read-only."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html_join

from asyncjobs.admin.display import ReadOnlyMixin
from asyncjobs.models import Schedule, ScheduleTick


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The cron schedules of ``ASYNCJOBS["SCHEDULES"]`` as the workers last saw them."""

    list_display = ("name", "task_path", "cron", "timezone", "misfire", "last_tick", "next_tick")
    readonly_fields = tuple(f.name for f in Schedule._meta.fields)


@admin.register(ScheduleTick)
class ScheduleTickAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Every tick that was enqueued, with its job."""

    list_display = ("schedule", "tick", "job_link", "enqueued_at")
    list_filter = ("schedule",)
    ordering = ("-tick",)
    readonly_fields = tuple(f.name for f in ScheduleTick._meta.fields)

    @admin.display(description="job")
    def job_link(self, obj: ScheduleTick) -> str:
        if not obj.job_id:
            return "—"
        url = reverse("admin:asyncjobs_job_change", args=[obj.job_id])
        return format_html_join("", '<a href="{}">{}</a>', [(url, str(obj.job_id)[:8])])
