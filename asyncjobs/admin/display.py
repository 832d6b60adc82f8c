"""Shared pieces of the admin pages: status badges, precise times, bounded JSON, the
read-only mixin and the paginator that spares big tables a COUNT(*)."""

import json
from datetime import datetime, timedelta
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from asyncjobs import services
from asyncjobs.conf import jobs_settings

STATUS_COLOURS = {
    "waiting": "#7c3aed",
    "scheduled": "#6b7280",
    "queued": "#b45309",
    "running": "#1d4ed8",
    "succeeded": "#15803d",
    "failed": "#b91c1c",
    "cancelled": "#4b5563",
    "lost": "#7c2d12",
    "timed_out": "#9a3412",
    "open": "#7c3aed",
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


BAR_COLOURS = (
    ("succeeded", "#16a34a"),
    ("failed", "#dc2626"),
    ("cancelled", "#6b7280"),
)


def progress_bar(batch: Any, *, width: str = "140px") -> str:
    """A batch's progress as a stacked bar: succeeded, failed and cancelled jobs in their
    colours, the pending ones left blank; the counts on hover and for screen readers."""
    total = max(int(batch.total), 1)
    segments = []
    for name, colour in BAR_COLOURS:
        count = int(getattr(batch, name))
        if count:
            segments.append(
                format_html(
                    '<span class="asyncjobs-bar-{}" style="display:inline-block;height:100%;'
                    'width:{}%;background:{}"></span>',
                    name,
                    f"{100 * count / total:.2f}",
                    colour,
                )
            )
    label = (
        f"{batch.percent:g}% of {batch.total}: {batch.succeeded} succeeded, "
        f"{batch.failed} failed, {batch.cancelled} cancelled, {batch.pending} pending"
    )
    return format_html(
        '<span style="white-space:nowrap"><span class="asyncjobs-bar" role="progressbar" '
        'aria-valuemin="0" aria-valuemax="100" '
        'aria-valuenow="{}" aria-label="{}" title="{}" style="display:inline-flex;'
        "width:{};height:10px;background:#e5e7eb;border-radius:5px;overflow:hidden;"
        'vertical-align:middle">{}</span> {}%</span>',
        f"{batch.percent:g}",
        label,
        label,
        width,
        mark_safe("".join(segments)),  # noqa: S308 (each built by format_html)
        f"{batch.percent:g}",
    )
