"""The operator's admin: jobs (inspect, retry, cancel, run now, delete), the dead letter
grouped by task and error, workers, queues (pause/resume), schedules.

Every action goes through the same services as the Python and REST APIs, needs its own
permission, and reports what it changed and what it skipped and why.
"""

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from asyncjobs import db, monitoring, services
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import InvalidTransitionError
from asyncjobs.models import (
    Attempt,
    Dashboard,
    Job,
    JobStatus,
    QueueState,
    Schedule,
    ScheduleTick,
    Worker,
    WorkerStatus,
)

STATUS_COLOURS = {
    "scheduled": "#6b7280",
    "queued": "#b45309",
    "running": "#1d4ed8",
    "succeeded": "#15803d",
    "failed": "#b91c1c",
    "cancelled": "#4b5563",
    "lost": "#7c2d12",
    "timed_out": "#9a3412",
}


def badge(value: str, label: str | None = None) -> str:
    """A coloured status badge."""
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 7px;border-radius:9px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(value, "#374151"),
        label or value,
    )


def pretty_json(value: Any) -> str:
    """JSON, indented, in a <pre>."""
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, indent=2, default=str))


class ReadOnlyMixin:
    """Jobs change only through the services: no add or edit forms."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EstimatedCountPaginator(Paginator):
    """Unfiltered changelists of a big table use the planner's row estimate instead of a
    COUNT(*) over every row on every page view."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if isinstance(qs, QuerySet) and not qs.query.where:
            estimate = db.estimated_row_count(qs.model, qs.db)
            if estimate is not None and estimate > 10_000:
                return estimate
        return super().count


class TaskFilter(admin.SimpleListFilter):
    """Filter by task, offering the tasks of the latest 10,000 jobs (bounded cost)."""

    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = Job.objects.order_by("-enqueued_at").values_list("task_path", flat=True)[:10_000]
        return [(t, t) for t in sorted(set(recent))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(task_path=self.value()) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    """Filter by queue, offering the configured queues (no DISTINCT over the whole table)."""

    title = "queue"
    parameter_name = "queue_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from asyncjobs.tasks_api import task_backends

        names = set(QueueState.objects.values_list("name", flat=True))
        for backend in task_backends.all():
            names |= set(getattr(backend, "queues", ()))
        return [(n, n) for n in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(queue_name=self.value()) if self.value() else queryset


class AttemptInline(ReadOnlyMixin, admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "outcome_badge",
        "worker_id",
        "started_at",
        "duration_s",
        "http_status",
        "error",
    )
    readonly_fields = fields
    ordering = ("number",)

    @admin.display(description="outcome")
    def outcome_badge(self, obj: Attempt) -> str:
        return badge(obj.outcome) if obj.outcome else badge("running")

    @admin.display(description="duration (s)")
    def duration_s(self, obj: Attempt) -> str:
        return f"{obj.duration.total_seconds():.3f}" if obj.duration else "—"

    @admin.display(description="error")
    def error(self, obj: Attempt) -> str:
        if not obj.error_class:
            return ""
        if not obj.traceback:
            return format_html("<b>{}</b>: {}", obj.error_class, obj.error_message)
        return format_html(
            "<details><summary><b>{}</b>: {}</summary><pre style='white-space:pre-wrap'>{}"
            "</pre></details>",
            obj.error_class,
            obj.error_message,
            obj.traceback,
        )


def _report(
    admin_: admin.ModelAdmin, request: HttpRequest, verb: str, done: int, skipped: dict[str, int]
) -> None:
    admin_.message_user(
        request, f"{verb} {done} job(s).", messages.SUCCESS if done else messages.INFO
    )
    for reason, count in skipped.items():
        admin_.message_user(request, f"Skipped {count} job(s): {reason}.", messages.WARNING)


@admin.register(Job)
class JobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "task_path",
        "queue_name",
        "status_badge",
        "attempts_display",
        "priority",
        "enqueued_at",
        "started_at",
        "finished_at",
        "duration_display",
    )
    list_filter = ("status", QueueFilter, TaskFilter, ("enqueued_at", admin.DateFieldListFilter))
    search_fields = ("=id", "task_path", "=unique_key")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-enqueued_at",)
    inlines = (AttemptInline,)
    actions = ("retry_selected", "cancel_selected", "run_now", "delete_selected")
    fieldsets = (
        (None, {"fields": ("id", "task_path", "queue_name", "priority", "status_badge")}),
        ("Call", {"fields": ("args_json", "kwargs_json")}),
        ("Outcome", {"fields": ("result_json", "progress_json", "last_error")}),
        (
            "Timeline",
            {
                "fields": (
                    "enqueued_at",
                    "run_after",
                    "started_at",
                    "last_attempted_at",
                    "finished_at",
                    "attempts_display",
                    "worker_id",
                    "lease_expires_at",
                    "cancel_requested_at",
                )
            },
        ),
        (
            "Policy",
            {
                "classes": ("collapse",),
                "fields": (
                    "max_attempts",
                    "backoff",
                    "retry_on",
                    "fail_on",
                    "timeout",
                    "unique_key",
                    "limit_key",
                    "webhook_url",
                    "enqueued_by",
                ),
            },
        ),
    )
    readonly_fields = (
        "id", "task_path", "queue_name", "priority", "status_badge", "args_json", "kwargs_json",
        "result_json", "progress_json", "last_error", "enqueued_at", "run_after", "started_at",
        "last_attempted_at", "finished_at", "attempts_display", "worker_id", "lease_expires_at",
        "cancel_requested_at", "max_attempts", "backoff", "retry_on", "fail_on", "timeout",
        "unique_key", "limit_key", "webhook_url", "enqueued_by",
    )  # fmt: skip

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """A job id finds that job through the primary key alone (an OR with the other
        fields would scan the table); anything else searches task and unique key."""
        term = search_term.strip()
        try:
            job_id = uuid.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(pk=job_id), False

    # --- columns and fields -----------------------------------------------------------------

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: Job) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        return badge(obj.status)

    @admin.display(description="attempts")
    def attempts_display(self, obj: Job) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="duration")
    def duration_display(self, obj: Job) -> str:
        return f"{obj.duration.total_seconds():.2f}s" if obj.duration else "—"

    @admin.display(description="args")
    def args_json(self, obj: Job) -> str:
        return pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, obj: Job) -> str:
        return pretty_json(obj.kwargs)

    @admin.display(description="result")
    def result_json(self, obj: Job) -> str:
        return pretty_json(obj.return_value) if obj.status == JobStatus.SUCCEEDED else "—"

    @admin.display(description="progress")
    def progress_json(self, obj: Job) -> str:
        return pretty_json(obj.progress) if obj.progress else "—"

    @admin.display(description="last error")
    def last_error(self, obj: Job) -> str:
        if not obj.last_error_class:
            return "—"
        return format_html("<b>{}</b>: {}", obj.last_error_class, obj.last_error_message)

    # --- actions ----------------------------------------------------------------------------

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("asyncjobs.retry_job"))

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("asyncjobs.cancel_job"))

    def has_run_now_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("asyncjobs.run_job_now"))

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Job], verb: str, act: Callable[[Any], Any]
    ) -> None:
        done, skipped = 0, dict[str, int]()
        for job_id in queryset.values_list("pk", flat=True):
            try:
                act(job_id)
            except InvalidTransitionError as exc:
                reason = str(exc).split("; ", 1)[-1].rstrip(".")
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                done += 1
        _report(self, request, verb, done, skipped)

    @admin.action(description="Retry selected jobs (failed or cancelled)", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._each(request, queryset, "Queued again", lambda pk: services.retry_job(pk))

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._each(request, queryset, "Cancelled (or asked to stop)", services.cancel_job)

    @admin.action(description="Run selected scheduled jobs now", permissions=["run_now"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._each(request, queryset, "Made ready", services.run_job_now)

    # --- the dead letter --------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        urls: list[URLPattern] = [
            path(
                "dead-letter/",
                self.admin_site.admin_view(self.dead_letter_view),
                name="asyncjobs_job_dead_letter",
            ),
        ]
        return urls + super().get_urls()

    def dead_letter_view(self, request: HttpRequest) -> HttpResponse:
        """Failed jobs grouped by task and error class, with counts and the latest error;
        retry or discard a whole group behind a confirmation."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        failed = Job.objects.dead_letter()
        if request.method == "POST":
            return self._dead_letter_action(request, failed)
        latest = failed.filter(
            task_path=OuterRef("task_path"), last_error_class=OuterRef("last_error_class")
        ).order_by("-finished_at")
        groups = (
            failed.values("task_path", "last_error_class")
            .annotate(
                count=Count("pk"),
                latest_at=Max("finished_at"),
                latest_message=Subquery(latest.values("last_error_message")[:1]),
            )
            .order_by("-count", "task_path")[:200]
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Dead letter",
            "opts": self.model._meta,
            "groups": list(groups),
            "can_retry": self.has_retry_permission(request),
            "can_discard": self.has_delete_permission(request),
        }
        return TemplateResponse(request, "admin/asyncjobs/job/dead_letter.html", context)

    def _dead_letter_action(self, request: HttpRequest, failed: QuerySet[Job]) -> HttpResponse:
        op = request.POST.get("op")
        group = failed.filter(
            task_path=request.POST.get("task_path", ""),
            last_error_class=request.POST.get("error_class", ""),
        )
        if op == "retry" and not self.has_retry_permission(request):
            raise PermissionDenied
        if op == "discard" and not self.has_delete_permission(request):
            raise PermissionDenied
        if op not in ("retry", "discard"):
            raise PermissionDenied
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": f"{op.capitalize()} a dead-letter group?",
                "opts": self.model._meta,
                "op": op,
                "task_path": request.POST.get("task_path", ""),
                "error_class": request.POST.get("error_class", ""),
                "count": group.count(),
            }
            return TemplateResponse(
                request, "admin/asyncjobs/job/dead_letter_confirm.html", context
            )
        if op == "retry":
            done = services.retry_jobs(group, now=timezone.now())
            self.message_user(request, f"Queued again {done} job(s).", messages.SUCCESS)
        else:
            done = services.discard_jobs(group)
            self.message_user(request, f"Discarded {done} job(s).", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:asyncjobs_job_dead_letter"))


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
        "started_at",
        "last_heartbeat_at",
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


def throughput_svg(
    throughput: list[tuple[Any, int, int]], width: int = 720, height: int = 160
) -> str:
    """Last hour's finished jobs per minute as a stacked bar chart (succeeded over failed)."""
    peak = max([ok + bad for _, ok, bad in throughput] + [1])
    bar = width / max(len(throughput), 1)
    parts = [
        format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" '
            'aria-label="Jobs finished per minute, last hour" id="throughput-chart">'
            '<rect width="100%" height="100%" fill="#f8fafc"/>',
            width,
            height + 20,
        )
    ]
    for i, (minute, ok, bad) in enumerate(throughput):
        x = i * bar
        ok_h = height * ok / peak
        bad_h = height * bad / peak
        parts.append(
            format_html(
                "<g><title>{}: {} succeeded, {} failed</title>"
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#16a34a"/>'
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#dc2626"/></g>',
                minute.strftime("%H:%M"),
                ok,
                bad,
                *(
                    f"{n:.1f}"
                    for n in (
                        x,
                        height - ok_h,
                        max(bar - 1, 1),
                        ok_h,
                        x,
                        height - ok_h - bad_h,
                        max(bar - 1, 1),
                        bad_h,
                    )
                ),
            )
        )
    parts.append(
        format_html(
            '<text x="2" y="{}" font-size="11" fill="#475569">-60 min</text>'
            '<text x="{}" y="{}" font-size="11" fill="#475569" text-anchor="end">now · '
            "peak {}/min</text></svg>",
            height + 15,
            width - 2,
            height + 15,
            peak,
        )
    )
    return format_html("{}", mark_safe("".join(parts)))  # noqa: S308 (built by format_html)


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    """The live dashboard: queues, lag, dead letter, throughput, workers. Refreshes itself."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(
            request.user.is_active
            and request.user.is_staff
            and (request.user.has_perm("asyncjobs.view_job"))
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        snap = monitoring.snapshot(now=timezone.now())
        context = {
            **self.admin_site.each_context(request),
            "title": "Background jobs dashboard",
            "opts": self.model._meta,
            "snap": snap,
            "chart": throughput_svg(snap.throughput),
            "finished_last_hour": sum(ok + bad for _, ok, bad in snap.throughput),
        }
        template = (
            "admin/asyncjobs/dashboard_fragment.html"
            if request.GET.get("fragment")
            else "admin/asyncjobs/dashboard.html"
        )
        response = TemplateResponse(request, template, context)
        response["Cache-Control"] = "no-store"
        return response
