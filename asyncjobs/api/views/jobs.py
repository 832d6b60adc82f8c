"""One job: read it, its result, retry or cancel it."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from asyncjobs import services
from asyncjobs.api.permissions import CanCancelJob, CanRetryJob
from asyncjobs.api.serializers import JobSerializer
from asyncjobs.api.views.common import (
    ERROR,
    JOB_OR_OUTCOME,
    TOKEN_PARAMETERS,
    HiddenJobMixin,
    JobMixin,
    can_read_job,
    jobs_database,
    no_store,
    setting_classes,
)
from asyncjobs.exceptions import InvalidTransitionError, JobNotFoundError
from asyncjobs.models import JobStatus


class JobDetailView(HiddenJobMixin):
    """``GET /jobs/<id>/``: the job, for ``asyncjobs.view_job``, its owner or the holder of
    its token."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in setting_classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(
        parameters=TOKEN_PARAMETERS,
        responses={200: JobSerializer, 404: ERROR},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        data = JobSerializer(job, context={"request": request}).data
        return no_store(Response(data), job)


class JobResultView(HiddenJobMixin):
    """``GET /jobs/<id>/result/``: the whole return value of a succeeded job, however large
    (the job's ``result`` is truncated past ``MAX_DISPLAY_BYTES``); for the job's readers."""

    renderer_classes = (JSONRenderer,)  # a download: no browsable page around a large value

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in setting_classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(
        parameters=TOKEN_PARAMETERS,
        responses={200: OpenApiResponse(OpenApiTypes.ANY), 404: ERROR},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        if job.status != JobStatus.SUCCEEDED:
            raise NotFound(f"The job has no result: it is {job.status}.")
        return no_store(Response(job.return_value))


class JobActionView(JobMixin):
    """Retry or cancel through the same services the Python API and the admin use.

    The same existence rule as reading: a caller who may neither read the job nor act on it
    gets 404, as for an id that does not exist; one who may read it but not act gets 403.
    A caller who may act but not read gets the outcome without the job: ``id`` and
    ``status`` only (and 409's reason).
    """

    service: Any = None  # services.retry_job or services.cancel_job
    action_permission: Any = None  # CanRetryJob or CanCancelJob

    def get_permissions(self) -> list[Any]:
        return []  # decided per job in post(): reading and acting are both needed to tell

    @extend_schema(
        parameters=TOKEN_PARAMETERS,
        request=None,
        responses={
            200: OpenApiResponse(
                JOB_OR_OUTCOME,
                description="The job; only its id and status for callers who may act on it "
                "but not read it.",
            ),
            403: ERROR,
            404: ERROR,
            409: ERROR,
        },
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        may_read = can_read_job(self, request, job)
        action = type(self).action_permission()
        may_act = action.has_permission(request, self) and action.has_object_permission(
            request, self, job
        )
        if not may_act:
            if not may_read:
                raise NotFound("No such job.")
            self.permission_denied(request, message=getattr(action, "message", None))
        try:
            job = type(self).service(job.pk, using=jobs_database())
        except InvalidTransitionError as exc:
            return no_store(Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT))
        except JobNotFoundError as exc:
            raise NotFound("No such job.") from exc
        if not may_read:
            return no_store(Response({"id": str(job.pk), "status": job.status}))
        return no_store(Response(JobSerializer(job, context={"request": request}).data), job)


class JobRetryView(JobActionView):
    """``POST /jobs/<id>/retry/``: a failed or cancelled job back to queued
    (``asyncjobs.retry_job``)."""

    service = staticmethod(services.retry_job)
    action_permission = CanRetryJob


class JobCancelView(JobActionView):
    """``POST /jobs/<id>/cancel/``: cancel a waiting job, ask a running one to stop
    (``asyncjobs.cancel_job``, or the user the job was enqueued for)."""

    service = staticmethod(services.cancel_job)
    action_permission = CanCancelJob
