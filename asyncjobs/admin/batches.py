"""Batches: the list (state, a progress bar, counts) and the batch page (its jobs by status,
links into the job list filtered by batch, "retry all failed" and "cancel the rest").

Read-only: the counters change only through the services, with the jobs they count. The
pages show a batch's jobs and their errors, so they take the jobs' permission,
``asyncjobs.view_job``, like the dashboard; the actions take ``retry_job`` and
``cancel_job``, like the job actions, and go through the same services.
"""

import uuid
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from asyncjobs import services
from asyncjobs.admin.display import badge, precise_time, progress_bar
from asyncjobs.exceptions import BatchNotFoundError
from asyncjobs.models import TERMINAL_STATUSES, Batch, BatchState, Job, JobStatus

VIEW_PERMISSION = "asyncjobs.view_job"
# Statuses a batch's job may still be in (the counters hold the others): every status not
# terminal, so that a status added later is counted and cancelled too.
PENDING_STATUSES = tuple(s for s in JobStatus if s not in TERMINAL_STATUSES)


def job_list_url(batch_id: Any, status: str | None = None) -> str:
    """The job admin's list of a batch's jobs, optionally of one status."""
    url = f"{reverse('admin:asyncjobs_job_changelist')}?batch={batch_id}"
    return f"{url}&status__exact={status}" if status else url


class StateFilter(admin.SimpleListFilter):
    """Filter by the state derived from the counters (``BatchState``)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(s.value), str(s.label)) for s in BatchState]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Batch]) -> QuerySet[Batch]:
        sealed = Q(sealed_at__isnull=False)
        done = sealed & Q(pending=0)
        conditions = {
            BatchState.OPEN: Q(sealed_at__isnull=True),
            BatchState.RUNNING: sealed & Q(pending__gt=0),
            BatchState.SUCCEEDED: done & Q(failed=0, cancelled=0),
            BatchState.FAILED: done & (Q(failed__gt=0) | Q(cancelled__gt=0)),
        }
        condition = conditions.get(self.value())  # type: ignore[call-overload]
        return queryset.filter(condition) if condition is not None else queryset


def pending_by_status(batch: Batch) -> dict[str, int]:
    """How many of ``batch``'s unfinished jobs are scheduled, queued and running: one
    grouped read of the pending jobs only, through the ``(batch, status)`` index."""
    rows = (
        Job.objects.using(batch._state.db or "default")
        .filter(batch_id=batch.pk, status__in=PENDING_STATUSES)
        .values("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = {str(s): 0 for s in PENDING_STATUSES}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """The batches, newest first, and each batch's page; see the module's docstring."""

    # Fits a 1280 px screen beside the sidebars: the counts by end are in the bar (and on
    # hover), the total with the failed and pending ones in one column.
    list_display = ("batch_name", "state_badge", "bar", "jobs", "created", "finished")
    list_filter = (StateFilter,)
    search_fields = ("=id", "description")
    ordering = ("-created_at",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("retry_failed_selected", "cancel_rest_selected")
    change_form_template = "admin/asyncjobs/batch/change_form.html"
    fields = (
        "id",
        "description",
        "state_badge",
        "bar",
        "enqueued_by",
        "created_at_display",
        "sealed_at_display",
        "finished_at_display",
        "callbacks_display",
        "fired_display",
        "webhook_url",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        # The counts as they stand: each row's, with the tallies not yet added to it.
        return super().get_queryset(request).counted()  # type: ignore[attr-defined]

    # --- permissions ------------------------------------------------------------------------

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.has_perm(VIEW_PERMISSION))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Its jobs point at it; finished batches are pruned after their jobs.
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("asyncjobs.retry_job"))

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return services.can_cancel_jobs(request.user)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Batch], search_term: str
    ) -> tuple[QuerySet[Batch], bool]:
        """A batch id finds that batch through its primary key; anything else searches the
        descriptions."""
        try:
            batch_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(pk=batch_id), False

    # --- columns and fields -----------------------------------------------------------------

    @admin.display(description="batch", ordering="description")
    def batch_name(self, obj: Batch) -> str:
        return format_html(
            '<span title="{}">{}</span> <code style="color:#64748b">{}</code>',
            obj.pk,
            obj.description or "batch",
            str(obj.pk)[:8],
        )

    @admin.display(description="state")
    def state_badge(self, obj: Batch) -> str:
        return badge(str(obj.state.value))

    @admin.display(description="progress")
    def bar(self, obj: Batch) -> str:
        return progress_bar(obj, width="90px")

    @admin.display(description="jobs", ordering="total")
    def jobs(self, obj: Batch) -> str:
        """The total; below it, how many failed and how many are pending, if any."""
        parts = [format_html("<b>{}</b>", obj.total)]
        if obj.failed:
            parts.append(format_html('<span style="color:#b91c1c">{} failed</span>', obj.failed))
        if obj.pending:
            parts.append(format_html("{} pending", obj.pending))
        return format_html(
            '<span style="white-space:nowrap">{}</span>',
            mark_safe("<br>".join(parts)),  # noqa: S308 (each built by format_html)
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Batch) -> str:
        return precise_time(obj.created_at, date=False)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: Batch) -> str:
        return precise_time(obj.finished_at, date=False)

    @admin.display(description="created at")
    def created_at_display(self, obj: Batch) -> str:
        return precise_time(obj.created_at)

    @admin.display(description="sealed at")
    def sealed_at_display(self, obj: Batch) -> str:
        return precise_time(obj.sealed_at)

    @admin.display(description="finished at")
    def finished_at_display(self, obj: Batch) -> str:
        return precise_time(obj.finished_at)

    @admin.display(description="callbacks")
    def callbacks_display(self, obj: Batch) -> str:
        names = [
            f"{name}: {spec.get('task_path', '?')}"
            for name, spec in sorted((obj.callbacks or {}).items())
            if isinstance(spec, dict)
        ]
        return "; ".join(names) or "—"

    @admin.display(description="callbacks fired")
    def fired_display(self, obj: Batch) -> str:
        fired = [
            (name, moment)
            for name, moment in (
                ("on_success", obj.success_fired_at),
                ("on_complete", obj.complete_fired_at),
                ("on_failure", obj.failure_fired_at),
            )
            if moment is not None
        ]
        if not fired:
            return "—"
        return format_html(
            "{}",
            ", ".join(f"{name} at {timezone.localtime(m):%Y-%m-%d %H:%M:%S}" for name, m in fired),
        )

    # --- the batch page ---------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        batch = self._batch(request, object_id)
        if batch is None:
            return super().change_view(request, object_id, form_url, extra_context)
        pending = pending_by_status(batch)
        rows = [
            (status, count)
            for status, count in (
                *pending.items(),
                (JobStatus.SUCCEEDED, batch.succeeded),
                (JobStatus.FAILED, batch.failed),
                (JobStatus.CANCELLED, batch.cancelled),
            )
        ]
        context = {
            **(extra_context or {}),
            "batch": batch,
            "batch_bar": progress_bar(batch, width="100%"),
            "status_rows": [
                {
                    "status": str(s),
                    "badge": badge(str(s)),
                    "count": n,
                    "url": job_list_url(batch.pk, s),
                }
                for s, n in rows
            ],
            "all_jobs_url": job_list_url(batch.pk),
            "can_retry": self.has_retry_permission(request) and batch.failed > 0,
            "can_cancel": self.has_cancel_permission(request) and batch.pending > 0,
            "cancelling": services.batch_cancel_job(batch.pk, using=self._using()),
        }
        return super().change_view(request, object_id, form_url, context)

    def _batch(self, request: HttpRequest, object_id: str) -> Batch | None:
        try:
            batch_id = uuid.UUID(str(object_id))
        except ValueError:
            return None
        return self.get_queryset(request).filter(pk=batch_id).first()

    def get_urls(self) -> list[URLPattern]:
        # Named paths: a pattern "<id>/<op>/" would also catch Django's "<id>/change/".
        urls: list[URLPattern] = [
            path(
                f"<uuid:object_id>/{op}/",
                self.admin_site.admin_view(self.operate_view),
                {"op": op},
                name=f"asyncjobs_batch_{op.replace('-', '_')}",
            )
            for op in ("retry-failed", "cancel-rest")
        ]
        return urls + super().get_urls()

    def operate_view(self, request: HttpRequest, object_id: uuid.UUID, op: str) -> HttpResponse:
        """``retry-failed`` or ``cancel-rest`` on one batch: a confirmation page (GET), then
        the operation (POST with ``confirm=yes``)."""
        if op not in ("retry-failed", "cancel-rest"):
            raise Http404("No such operation.")
        if not self.has_view_permission(request):
            raise PermissionDenied
        allowed = (
            self.has_retry_permission(request)
            if op == "retry-failed"
            else self.has_cancel_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        batch = self._batch(request, str(object_id))
        if batch is None:
            raise Http404("No such batch.")
        page = reverse("admin:asyncjobs_batch_change", args=[str(batch.pk)])
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            if op == "retry-failed":
                self._retry_failed(request, [batch.pk])
            else:
                self._cancel_rest(request, [batch.pk])
            return HttpResponseRedirect(page)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{'Retry the failed jobs' if op == 'retry-failed' else 'Cancel the rest'} "
            f"of {batch}?",
            "opts": self.model._meta,
            "batch": batch,
            "op": op,
            "count": batch.failed if op == "retry-failed" else batch.pending,
            "limit": services.bulk.CANCEL_INLINE_LIMIT,
            "page": page,
        }
        return TemplateResponse(request, "admin/asyncjobs/batch/confirm.html", context)

    # --- operations, shared by the page's buttons and the list's actions ---------------------

    def _retry_failed(self, request: HttpRequest, batch_ids: list[uuid.UUID]) -> None:
        """Queue again the failed jobs of the batches (one statement each through
        ``services.retry_jobs``, which reopens the batches)."""
        jobs = Job.objects.using(self._using()).filter(status=JobStatus.FAILED)
        done = sum(
            services.retry_jobs(jobs.filter(batch_id=pk), now=timezone.now()) for pk in batch_ids
        )
        self.message_user(
            request,
            f"Queued again {done} failed job(s) of {len(batch_ids)} batch(es).",
            messages.SUCCESS if done else messages.INFO,
        )

    def _cancel_rest(self, request: HttpRequest, batch_ids: list[uuid.UUID]) -> None:
        """Cancel the unfinished jobs of the batches through ``services.cancel_batch``
        (running ones are asked to stop): a few in this request, the rest of a big batch by
        a job of its own, in chunks."""
        using = self._using()
        cancelled = asked = 0
        handed: list[uuid.UUID] = []
        for pk in batch_ids:
            try:
                done = services.cancel_batch(pk, using=using, user=request.user)
            except BatchNotFoundError:
                continue  # pruned meanwhile
            cancelled += done.cancelled
            asked += done.asked
            if done.job_id is not None:
                handed.append(done.job_id)
        self.message_user(
            request,
            f"Cancelled {cancelled} job(s); asked {asked} running job(s) to stop.",
            messages.SUCCESS if cancelled or asked or handed else messages.INFO,
        )
        for job_id in handed:
            self.message_user(
                request,
                format_html(
                    'A job cancels the rest, {} at a time: <a href="{}">{}</a>. The counts '
                    "move as it goes.",
                    services.bulk.CANCEL_CHUNK,
                    reverse("admin:asyncjobs_job_change", args=[str(job_id)]),
                    str(job_id)[:8],
                ),
                messages.INFO,
            )

    def _using(self) -> str:
        return Job.objects.db

    @admin.action(description="Retry the failed jobs of selected batches", permissions=["retry"])
    def retry_failed_selected(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        self._retry_failed(request, list(queryset.values_list("pk", flat=True)))

    @admin.action(description="Cancel the rest of selected batches", permissions=["cancel"])
    def cancel_rest_selected(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        self._cancel_rest(request, list(queryset.values_list("pk", flat=True)))
