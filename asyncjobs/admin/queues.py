"""Queues: pause and resume, behind the ``pause_queue`` permission."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from asyncjobs import services
from asyncjobs.exceptions import UnknownQueueError
from asyncjobs.models import QueueState


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
