"""Who may do what through the client API. Default deny.

Operators' rights come from Django's model permissions, as in the admin: ``is_staff`` alone
opens nothing. ``asyncjobs.view_job`` reads every job (with tracebacks), the list, the stats
and the metrics; ``retry_job``, ``cancel_job``, ``add_job`` and ``pause_queue`` allow what
their names say. A job is also read by the user it was enqueued for and by the holder of its
status token. A batch is read by the same operators (``view_job``: a batch shows its jobs'
errors), by the user it was enqueued for and by the holder of the batch's own token.
"""

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from asyncjobs import services
from asyncjobs.tokens import check_batch_token, check_token

TOKEN_HEADER = "HTTP_X_JOB_TOKEN"  # noqa: S105 (a header name)
VIEW_PERMISSION = "asyncjobs.view_job"


def request_token(request: Request) -> str:
    """The status token of a request: the ``X-Job-Token`` header (preferred: query strings
    end up in access logs), else ``?token=``."""
    return str(request.META.get(TOKEN_HEADER) or request.query_params.get("token") or "")


def is_owner(request: Request, job: Any) -> bool:
    """Whether the request's user is the user the job (or batch) was enqueued for."""
    user = request.user
    return bool(user and user.is_authenticated and job.enqueued_by_id == user.pk)


def can_view_jobs(user: Any) -> bool:
    """Whether ``user`` reads every job: the ``asyncjobs.view_job`` permission (superusers
    have it; inactive users have none)."""
    return bool(user is not None and user.has_perm(VIEW_PERMISSION))


class CanReadJob(BasePermission):
    """Read one job: users with ``asyncjobs.view_job``; the user it was enqueued for; the
    holder of its status token.

    A token opens the job it was made for and nothing else, until it expires.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        return True  # decided per job

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if can_view_jobs(request.user):
            return True
        return is_owner(request, obj) or check_token(request_token(request), obj.pk)


class CanReadBatch(BasePermission):
    """Read one batch (its counts and its failed jobs' errors): users with
    ``asyncjobs.view_job``; the user it was enqueued for; the holder of its batch token.

    A batch token opens that batch only; a job's token never opens a batch.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        return True  # decided per batch

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if can_view_jobs(request.user):
            return True
        return is_owner(request, obj) or check_batch_token(request_token(request), obj.pk)


class CanViewJobs(BasePermission):
    """List and count jobs, read the stats: users with ``asyncjobs.view_job``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return can_view_jobs(request.user)


class CanCreateJob(BasePermission):
    """Create HTTP callback jobs: authenticated users with ``asyncjobs.add_job``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("asyncjobs.add_job"))


class CanRetryJob(BasePermission):
    """Retry a job: users with ``asyncjobs.retry_job``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("asyncjobs.retry_job"))


class CanCancelJob(BasePermission):
    """Cancel a job: users with ``asyncjobs.cancel_job``, or the user it was enqueued for."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return bool(request.user.has_perm("asyncjobs.cancel_job") or is_owner(request, obj))


class CanPauseQueue(BasePermission):
    """Pause or resume a queue: users with ``asyncjobs.pause_queue`` (the check the admin
    and ``services.set_queue_paused`` make too)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return services.can_pause_queues(request.user)
