"""Operator actions on jobs: retry, cancel and run now on a selection, the dead letter,
and whole-value JSON downloads."""

import json
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from asyncjobs import outbound, services
from asyncjobs.admin.display import DOWNLOADABLE_JSON, precise_time
from asyncjobs.exceptions import InvalidTransitionError
from asyncjobs.models import Job, JobStatus


def _report(
    admin_: admin.ModelAdmin, request: HttpRequest, verb: str, done: int, skipped: dict[str, int]
) -> None:
    admin_.message_user(
        request, f"{verb} {done} job(s).", messages.SUCCESS if done else messages.INFO
    )
    for reason, count in skipped.items():
        admin_.message_user(request, f"Skipped {count} job(s): {reason}.", messages.WARNING)


class JobActions(admin.ModelAdmin):
    """The job page's operations: retry, cancel and run-now actions, the dead letter
    (grouped failures, retried or discarded a group at a time) and the download of a job's
    whole JSON values. Each needs its own permission and goes through the services."""

    actions = ("retry_selected", "cancel_selected", "run_now", "delete_selected")

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
