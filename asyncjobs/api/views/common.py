"""What the API's views share: job and batch lookup (404 for unknown, malformed and hidden ids), the
read permission check, no-store caching, and the schema pieces of the OpenAPI description."""

import uuid
from typing import Any, NoReturn, TypeVar

from django.db import models
from django.utils.cache import patch_cache_control
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.views import APIView

from asyncjobs.api.descriptions import DescribedView
from asyncjobs.api.parsers import BoundedJSONParser
from asyncjobs.api.serializers import retry_after_seconds
from asyncjobs.conf import jobs_settings
from asyncjobs.models import Job

Row = TypeVar("Row", bound=models.Model)

# Seconds a client should wait before enqueueing again into a full queue.
QUEUE_FULL_RETRY_AFTER = 10

# A job (for callers who may read it), or only its id and status (anyOf: a job matches
# both shapes, which oneOf would refuse).
JOB_OR_OUTCOME = {
    "anyOf": [
        {"$ref": "#/components/schemas/Job"},
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "status": {"type": "string"},
            },
            "required": ["id", "status"],
        },
    ]
}
ERROR = OpenApiResponse(
    inline_serializer("Detail", {"detail": serializers.CharField()}),
    description="The reason, in detail.",
)
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Field errors: each field's name with its messages."
)
TOKEN_PARAMETERS = [
    OpenApiParameter(
        "X-Job-Token",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="A job's status token (preferred: query strings end up in access logs).",
    ),
    OpenApiParameter(
        "token",
        OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        description="A job's status token, for clients that cannot send headers (EventSource).",
    ),
]


def setting_classes(setting: str) -> list[Any]:
    """The classes named by the dotted paths of the ``ASYNCJOBS`` setting ``setting``."""
    return [import_string(path) for path in getattr(jobs_settings, setting)]


def jobs_database() -> str:
    """The database alias of the default task backend, where the jobs are."""
    from asyncjobs.tasks_api import task_backends

    return str(getattr(task_backends["default"], "database", "default"))


def get_or_404(view: APIView, model: type[Row], raw_id: Any, name: str) -> Row:
    """The ``model`` row of id ``raw_id`` in the jobs' database, once ``view`` checked its
    object permissions; ``NotFound`` ("No such <name>.") for an unknown or malformed id."""
    try:
        pk = uuid.UUID(str(raw_id))
    except ValueError as exc:
        raise NotFound(f"No such {name}.") from exc
    row = model._default_manager.using(jobs_database()).filter(pk=pk).first()
    if row is None:
        raise NotFound(f"No such {name}.")
    view.check_object_permissions(view.request, row)
    return row


class JobMixin(DescribedView, APIView):
    """Look a job up by id; unknown or malformed ids are 404."""

    parser_classes = (BoundedJSONParser,)

    def get_job(self) -> Job:
        return get_or_404(self, Job, self.kwargs["job_id"], "job")


class HiddenJobMixin(JobMixin):
    """Reading: whoever may not see a job is not told that it exists (404, not 403)."""

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        raise NotFound("No such job.")


def can_read_job(view: APIView, request: Request, job: Job) -> bool:
    """Whether the request may read ``job`` under ``API_READ_PERMISSION_CLASSES``."""
    return all(
        p.has_permission(request, view) and p.has_object_permission(request, view, job)
        for p in (cls() for cls in setting_classes("API_READ_PERMISSION_CLASSES"))
    )


def no_store(response: Any, job: Job | None = None) -> Any:
    """Mark ``response`` private and never stored; with ``job``, add the ``Retry-After`` a
    poller should honour (``retry_after_seconds``)."""
    patch_cache_control(response, no_store=True, private=True, max_age=0)
    if job is not None:
        wait = retry_after_seconds(job)
        if wait is not None:
            response["Retry-After"] = str(wait)
    return response
