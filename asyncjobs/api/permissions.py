"""Who may do what through the client API. Default deny."""

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from asyncjobs.tokens import check_token

TOKEN_HEADER = "HTTP_X_JOB_TOKEN"  # noqa: S105 (a header name)


def request_token(request: Request) -> str:
    """The status token of a request: ``?token=`` or the ``X-Job-Token`` header."""
    return str(request.query_params.get("token") or request.META.get(TOKEN_HEADER, ""))


def is_owner(request: Request, job: Any) -> bool:
    """Whether the request's user is the user the job was enqueued for."""
    user = request.user
    return bool(user and user.is_authenticated and job.enqueued_by_id == user.pk)


class CanReadJob(BasePermission):
    """Read one job: staff; the user it was enqueued for; the holder of its status token.

    A token opens the job it was made for and nothing else, until it expires.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        return True  # decided per job

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        user = request.user
        if user and user.is_authenticated and user.is_staff:
            return True
        return is_owner(request, obj) or check_token(request_token(request), obj.pk)


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
    """Pause or resume a queue: users with ``asyncjobs.pause_queue``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("asyncjobs.pause_queue"))
