"""The job list and job page, with each job's attempts; the actions and the dead letter
are in ``asyncjobs.admin.actions``."""

import uuid
from typing import Any

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from asyncjobs import outbound, services
from asyncjobs.admin.actions import JobActions
from asyncjobs.admin.display import (
    EstimatedCountPaginator,
    ReadOnlyMixin,
    badge,
    bounded_json,
    compact_age,
    precise_time,
    pretty_json,
)
from asyncjobs.models import Attempt, Batch, Job, JobStatus, QueueState


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


class BatchFilter(admin.SimpleListFilter):
    """Filter by batch: the ten latest batches are offered; any batch's id works in
    ``?batch=<id>`` (the batch page links here). A malformed id matches nothing."""

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = Batch.objects.counted().order_by("-created_at")[:10]
        choices = [(str(b.pk), f"{b.description or 'batch'} {str(b.pk)[:8]}") for b in recent]
        value = self.value()
        if value and value not in {pk for pk, _ in choices}:
            choices.append((value, f"batch {value[:8]}"))  # the one chosen, shown as chosen
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        if not self.value():
            return queryset
        try:
            batch_id = uuid.UUID(str(self.value()))
        except ValueError:
            return queryset.none()
        return queryset.filter(batch_id=batch_id)


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


@admin.register(Job)
class JobAdmin(ReadOnlyMixin, JobActions):
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
    list_filter = (
        "status",
        QueueFilter,
        TaskFilter,
        BatchFilter,
        ("enqueued_at", admin.DateFieldListFilter),
    )
    search_fields = ("=id", "task_path", "=unique_key")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    ordering = ("-enqueued_at",)
    inlines = (AttemptInline,)
    fieldsets = (
        (
            None,
            {"fields": ("id", "task_path", "queue_name", "priority", "status_badge", "batch_link")},
        ),
        ("Call", {"fields": ("args_json", "kwargs_json")}),
        ("Outcome", {"fields": ("result_json", "progress_json", "last_error")}),
        ("Dependencies", {"fields": ("depends_on_display", "dependents_display")}),
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
        "id", "task_path", "queue_name", "priority", "status_badge", "batch_link", "args_json",
        "kwargs_json", "result_json", "progress_json", "last_error", "depends_on_display",
        "dependents_display", "enqueued_at_display",
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
        """The id's first characters; for a job of a batch, a mark linking to the batch's
        page (a column of its own would not fit 1280 px)."""
        if obj.batch_id is None:
            return str(obj.pk)[:8]
        return format_html(
            '{} <a href="{}" class="asyncjobs-batch-mark" title="batch {}" '
            'style="text-decoration:none">▦</a>',
            str(obj.pk)[:8],
            reverse("admin:asyncjobs_batch_change", args=[str(obj.batch_id)]),
            obj.batch_id,
        )

    @admin.display(description="batch")
    def batch_link(self, obj: Job) -> str:
        """The job's batch (its page), by the first characters of its id; the batch's jobs
        are one click further (the batch filter)."""
        if obj.batch_id is None:
            return "—"
        return format_html(
            '<a href="{}" title="batch {}"><code>{}</code></a>',
            reverse("admin:asyncjobs_batch_change", args=[str(obj.batch_id)]),
            obj.batch_id,
            str(obj.batch_id)[:8],
        )

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

    # How many edges a job page lists each way; a job may have thousands of dependents.
    EDGES_SHOWN = 20

    def _edges(self, edges: list[Any], total: int, other: str) -> str:
        if not edges:
            return "—"
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} {}</li>',
            (
                (
                    reverse("admin:asyncjobs_job_change", args=[getattr(edge, f"{other}_id")]),
                    getattr(edge, other).task_path,
                    badge(getattr(edge, other).status),
                    "resolved: " + edge.outcome if edge.resolved_at else "pending",
                )
                for edge in edges
            ),
        )
        more = total - len(edges)
        return format_html(
            '<ul style="margin:0;padding-left:1.2em">{}</ul>{}',
            rows,
            format_html("and {} more", more) if more > 0 else "",
        )

    @admin.display(description="depends on")
    def depends_on_display(self, obj: Job) -> str:
        edges, total = services.dependencies_of(obj, limit=self.EDGES_SHOWN)
        return self._edges(edges, total, "parent")

    @admin.display(description="dependents")
    def dependents_display(self, obj: Job) -> str:
        edges, total = services.dependents_of(obj, limit=self.EDGES_SHOWN)
        return self._edges(edges, total, "dependent")
