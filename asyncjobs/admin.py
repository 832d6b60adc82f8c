"""The operator's admin: jobs (inspect, retry, cancel, run now, delete), the dead letter
grouped by task and error, workers, queues (pause/resume), schedules.

Every action goes through the same services as the Python and REST APIs, needs its own
permission, and reports what it changed and what it skipped and why.
"""

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from asyncjobs import monitoring, outbound, services
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import InvalidTransitionError, UnknownQueueError
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


def precise_time(value: datetime | None, *, date: bool = True) -> str:
    """A moment to the millisecond in the current time zone, ``2026-12-01 22:12:07.512 UTC``
    (backoff between attempts must be readable; Django's format stops at minutes). With
    ``date=False`` the time alone, the full moment on hover."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    day = f"{local:%Y-%m-%d}"
    clock = f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"
    zone = local.tzname() or ""
    full = f"{day} {clock} {zone}".rstrip()
    if not date:
        return format_html(
            '<time datetime="{}" title="{}" style="white-space:nowrap">{}</time>',
            value.isoformat(),
            full,
            clock,
        )
    # The date and the time each stay whole; a narrow column breaks between them.
    return format_html(
        '<time datetime="{}" title="{}"><span style="white-space:nowrap">{}</span> '
        '<span style="white-space:nowrap">{}</span></time>',
        value.isoformat(),
        full,
        day,
        f"{clock} {zone}".rstrip(),
    )


def compact_age(delta: timedelta) -> str:
    """An age in its largest unit, for a narrow column: ``45 s``, ``12 min``, ``5 h``,
    ``3 d`` (the exact moment is on hover)."""
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def pretty_json(value: Any) -> str:
    """JSON, indented, in a <pre>."""
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, indent=2, default=str))


def bounded_json(value: Any, download_url: str) -> str:
    """``pretty_json``, or for a value larger than ``MAX_DISPLAY_BYTES`` its beginning with a
    note saying so and a link to ``download_url`` for the whole value."""
    limit = jobs_settings.MAX_DISPLAY_BYTES
    excerpt = services.json_excerpt(value, limit, indent=2)
    if excerpt is None:
        return pretty_json(value)
    return format_html(
        "<p class='asyncjobs-truncated'>Truncated: {} bytes of JSON, of which the first {} "
        "characters are shown. <a href='{}'>Download the whole value</a></p>"
        "<pre style='margin:0'>{}…</pre>",
        f"{services.json_size(value):,}",
        f"{limit:,}",
        download_url,
        excerpt,
    )


# The parts of a job the admin can download whole: their Job attribute.
DOWNLOADABLE_JSON = {"args": "args", "kwargs": "kwargs", "result": "return_value"}


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
            estimate = services.estimated_row_count(qs.model, using=qs.db)
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
        "started",
        "waited",
        "duration_s",
        "http_status",
        "error",
    )
    readonly_fields = fields
    ordering = ("number",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Attempt]:
        previous = Attempt.objects.filter(job=OuterRef("job"), number=OuterRef("number") - 1)
        return (
            super()
            .get_queryset(request)
            .annotate(previous_finished_at=Subquery(previous.values("finished_at")[:1]))
        )

    @admin.display(description="started")
    def started(self, obj: Attempt) -> str:
        return precise_time(obj.started_at)

    @admin.display(description="after")
    def waited(self, obj: Attempt) -> str:
        """The gap since the previous attempt ended: the backoff, as it happened."""
        previous = getattr(obj, "previous_finished_at", None)
        if previous is None or obj.started_at is None:
            return "—"
        return format_html(
            '<span style="white-space:nowrap">{} s</span>',
            f"{(obj.started_at - previous).total_seconds():.1f}",
        )

    @admin.display(description="outcome")
    def outcome_badge(self, obj: Attempt) -> str:
        return badge(obj.outcome) if obj.outcome else badge("running")

    @admin.display(description="duration (s)")
    def duration_s(self, obj: Attempt) -> str:
        return f"{obj.duration.total_seconds():.3f}" if obj.duration is not None else "—"

    @admin.display(description="error")
    def error(self, obj: Attempt) -> str:
        if not obj.error_class:
            return ""
        # Long URLs and paths wrap inside the column instead of widening the page; the
        # column keeps a readable width for the error's class name.
        if not obj.traceback:
            return format_html(
                "<div style='overflow-wrap:anywhere;min-width:15em'><b>{}</b>: {}</div>",
                obj.error_class,
                obj.error_message,
            )
        return format_html(
            "<details style='overflow-wrap:anywhere;min-width:15em'><summary><b>{}</b>: {}"
            "</summary>"
            "<pre style='white-space:pre-wrap'>{}</pre></details>",
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
    # Fits a 1280 px screen beside the admin's two sidebars: times without their date and the
    # task's name without its module (both in full on hover); priority and duration on the
    # job's page.
    list_display = (
        "short_id",
        "task_name",
        "queue_name",
        "status_badge",
        "attempts_display",
        "age",
        "enqueued",
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
                    "enqueued_at_display",
                    "run_after_display",
                    "started_at_display",
                    "last_attempted_at_display",
                    "finished_at_display",
                    "duration_display",
                    "attempts_display",
                    "worker_id",
                    "lease_expires_at_display",
                    "cancel_requested_at_display",
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
        "result_json", "progress_json", "last_error", "enqueued_at_display",
        "run_after_display", "started_at_display", "last_attempted_at_display",
        "finished_at_display", "duration_display", "attempts_display", "worker_id",
        "lease_expires_at_display", "cancel_requested_at_display", "max_attempts", "backoff",
        "retry_on", "fail_on", "timeout", "unique_key", "limit_key", "webhook_url", "enqueued_by",
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

    @admin.display(description="task", ordering="task_path")
    def task_name(self, obj: Job) -> str:
        """The function's name; its full dotted path on hover."""
        return format_html(
            '<span title="{}">{}</span>', obj.task_path, obj.task_path.rpartition(".")[2]
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        return badge(obj.status)

    @admin.display(description="age", ordering="-enqueued_at")
    def age(self, obj: Job) -> str:
        """Time since the job was enqueued."""
        return format_html(
            '<span style="white-space:nowrap">{}</span>',
            compact_age(timezone.now() - obj.enqueued_at),
        )

    @admin.display(description="enqueued", ordering="enqueued_at")
    def enqueued(self, obj: Job) -> str:
        return precise_time(obj.enqueued_at, date=False)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: Job) -> str:
        return precise_time(obj.finished_at, date=False)

    @admin.display(description="enqueued at")
    def enqueued_at_display(self, obj: Job) -> str:
        return precise_time(obj.enqueued_at)

    @admin.display(description="run after (the earliest start of the next attempt)")
    def run_after_display(self, obj: Job) -> str:
        return precise_time(obj.run_after)

    @admin.display(description="started at")
    def started_at_display(self, obj: Job) -> str:
        return precise_time(obj.started_at)

    @admin.display(description="last attempted at")
    def last_attempted_at_display(self, obj: Job) -> str:
        return precise_time(obj.last_attempted_at)

    @admin.display(description="finished at")
    def finished_at_display(self, obj: Job) -> str:
        return precise_time(obj.finished_at)

    @admin.display(description="lease expires at")
    def lease_expires_at_display(self, obj: Job) -> str:
        return precise_time(obj.lease_expires_at)

    @admin.display(description="cancel requested at")
    def cancel_requested_at_display(self, obj: Job) -> str:
        return precise_time(obj.cancel_requested_at)

    @admin.display(description="attempts")
    def attempts_display(self, obj: Job) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="duration")
    def duration_display(self, obj: Job) -> str:
        return f"{obj.duration.total_seconds():.2f}s" if obj.duration else "—"

    @staticmethod
    def _json_url(obj: Job, part: str) -> str:
        return reverse("admin:asyncjobs_job_json", args=[str(obj.pk), part])

    @admin.display(description="args")
    def args_json(self, obj: Job) -> str:
        return bounded_json(obj.args, self._json_url(obj, "args"))

    @admin.display(description="kwargs")
    def kwargs_json(self, obj: Job) -> str:
        # A callback job's credential headers are shown redacted (and downloaded so).
        return bounded_json(
            outbound.redact_call(obj.task_path, obj.kwargs), self._json_url(obj, "kwargs")
        )

    @admin.display(description="result")
    def result_json(self, obj: Job) -> str:
        if obj.status != JobStatus.SUCCEEDED:
            return "—"
        return bounded_json(obj.return_value, self._json_url(obj, "result"))

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
            path(
                "<uuid:object_id>/json/<str:part>/",
                self.admin_site.admin_view(self.json_view),
                name="asyncjobs_job_json",
            ),
        ]
        return urls + super().get_urls()

    def json_view(self, request: HttpRequest, object_id: uuid.UUID, part: str) -> HttpResponse:
        """The whole of a job's ``args``, ``kwargs`` or ``result`` as a JSON file, however
        large (the job page truncates large values); for users who may view the job."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = self.get_object(request, str(object_id))
        if job is None or part not in DOWNLOADABLE_JSON:
            raise Http404("No such job or value.")
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        if part == "result" and job.status != JobStatus.SUCCEEDED:
            raise Http404("The job has no result.")
        value = getattr(job, DOWNLOADABLE_JSON[part])
        if part == "kwargs":
            value = outbound.redact_call(job.task_path, value)
        response = HttpResponse(json.dumps(value), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-{part}.json"'
        return response

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
            "groups": [
                {
                    **group,
                    "task_module": group["task_path"].rpartition(".")[0],
                    "task_name": group["task_path"].rpartition(".")[2],
                    "latest": precise_time(group["latest_at"]),
                }
                for group in groups
            ],
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


class QueueStateForm(forms.ModelForm):
    """Pause (or resume) a queue by name; only configured queues can be paused."""

    class Meta:
        model = QueueState
        fields = ("name", "paused")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        name = str(data.get("name") or self.instance.name or "")
        try:
            services.check_queue_name(name, paused=bool(data.get("paused")))
        except UnknownQueueError as exc:
            self.add_error("name" if "name" in self.fields else None, str(exc))
        return data


@admin.register(QueueState)
class QueueStateAdmin(admin.ModelAdmin):
    """Pause and resume queues (add a row to pause a queue that has none yet).

    Adding or changing a row pauses or resumes a queue, so both need ``pause_queue``, the
    permission the actions, the API and ``services.set_queue_paused`` check, and never the
    ordinary model permissions. Rows are not deleted here: deleting a paused queue's row
    would resume it; resume it instead.
    """

    form = QueueStateForm
    list_display = ("name", "paused", "changed_at")
    actions = ("pause", "resume")
    fields = ("name", "paused")

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return services.can_pause_queues(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_pause_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_pause_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_pause_permission(request) or super().has_view_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A row's name is its queue: editing it would pause another queue (a new row).
        return ("name",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.set_queue_paused(obj.name, obj.paused, now=timezone.now(), user=request.user)

    def _set(self, request: HttpRequest, queryset: QuerySet[QueueState], paused: bool) -> None:
        names = list(queryset.values_list("name", flat=True))
        done, refused = 0, []
        for name in names:
            try:
                services.set_queue_paused(name, paused, now=timezone.now(), user=request.user)
            except UnknownQueueError:
                refused.append(name)
            else:
                done += 1
        verb = "Paused" if paused else "Resumed"
        self.message_user(request, f"{verb} {done} queue(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request,
                f"Skipped {len(refused)} queue(s) that are not configured: "
                f"{', '.join(sorted(refused))}.",
                messages.WARNING,
            )

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
