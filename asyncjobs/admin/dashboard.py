"""The live dashboard: queues, lag, dead letter, throughput chart, batches, workers."""

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from asyncjobs import monitoring
from asyncjobs.admin.display import badge, precise_time, progress_bar
from asyncjobs.models import Dashboard


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
    """The live dashboard: queues, lag, dead letter, throughput, batches, workers. Refreshes
    itself."""

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
        now = timezone.now()
        snap = monitoring.snapshot(now=now)
        batches = [
            {
                "batch": b,
                "state": badge(str(b.state.value)),
                "bar": progress_bar(b),
                "created": precise_time(b.created_at, date=False),
                "url": reverse("admin:asyncjobs_batch_change", args=[str(b.pk)]),
            }
            for b in monitoring.dashboard_batches(now=now)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Background jobs dashboard",
            "opts": self.model._meta,
            "snap": snap,
            "chart": throughput_svg(snap.throughput),
            "finished_last_hour": sum(ok + bad for _, ok, bad in snap.throughput),
            "batches": batches,
        }
        template = (
            "admin/asyncjobs/dashboard_fragment.html"
            if request.GET.get("fragment")
            else "admin/asyncjobs/dashboard.html"
        )
        response = TemplateResponse(request, template, context)
        response["Cache-Control"] = "no-store"
        return response
