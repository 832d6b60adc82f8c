"""``/jobs/``: list and count jobs, create HTTP callback jobs."""

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from asyncjobs import retry, services
from asyncjobs.api.descriptions import DescribedView
from asyncjobs.api.parsers import BoundedJSONParser
from asyncjobs.api.serializers import CallbackJobSerializer, JobListSerializer, JobSerializer
from asyncjobs.api.throttling import CreateJobThrottle
from asyncjobs.api.views.common import (
    ERROR,
    FIELD_ERRORS,
    QUEUE_FULL_RETRY_AFTER,
    jobs_database,
    no_store,
    setting_classes,
)
from asyncjobs.exceptions import ArgumentsTooLargeError, QueueFullError
from asyncjobs.models import Job, JobStatus
from asyncjobs.tokens import make_token, status_url


class JobPagination(CursorPagination):
    """Newest first; cursors, so no COUNT(*) over the table."""

    ordering = ("-enqueued_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        """Like DRF's, but a malformed ``page_size`` is a 400, not silently the default."""
        raw = request.query_params.getlist(self.page_size_query_param)
        if not raw:
            return self.page_size
        try:
            (value,) = raw
            size = int(value)
            if not 1 <= size <= self.max_page_size:
                raise ValueError(size)
        except ValueError as exc:
            raise ValidationError(
                {"page_size": f"A whole number from 1 to {self.max_page_size}."}
            ) from exc
        return size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                }
        return parameters


class JobListCreateView(DescribedView, generics.GenericAPIView[Job]):
    """``GET /jobs/``: jobs for ``asyncjobs.view_job``, filtered by ``status``, ``queue``,
    ``task``. ``POST /jobs/``: create an HTTP callback job (202 Accepted)."""

    pagination_class = JobPagination
    serializer_class = JobListSerializer
    parser_classes = (BoundedJSONParser,)

    def get_throttles(self) -> list[Any]:
        return [*super().get_throttles(), CreateJobThrottle()]

    def get_permissions(self) -> list[Any]:
        setting = (
            "API_CREATE_PERMISSION_CLASSES"
            if self.request.method == "POST"
            else "API_ADMIN_PERMISSION_CLASSES"
        )
        return [cls() for cls in setting_classes(setting)]

    def get_serializer_class(self) -> Any:
        return CallbackJobSerializer if self.request.method == "POST" else JobListSerializer

    def get_queryset(self) -> Any:
        jobs = Job.objects.using(jobs_database()).all()
        params = self.request.query_params
        if "status" in params:
            if params["status"] not in JobStatus.values:
                raise ValidationError({"status": f"One of: {', '.join(JobStatus.values)}."})
            jobs = jobs.filter(status=params["status"])
        for name, column in (("queue", "queue_name"), ("task", "task_path")):
            value = params.get(name)
            if not value:
                continue
            if "\x00" in value:  # PostgreSQL refuses it in a statement: no job has it
                raise ValidationError({name: "Null characters are not allowed."})
            jobs = jobs.filter(**{column: value})
        return jobs

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=JobStatus.values),
            OpenApiParameter("queue", OpenApiTypes.STR),
            OpenApiParameter("task", OpenApiTypes.STR),
        ],
        responses={
            200: JobListSerializer(many=True),
            400: FIELD_ERRORS,
            403: ERROR,
            404: OpenApiResponse(description="Invalid cursor."),
        },
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        data = JobListSerializer(page, many=True, context={"request": request}).data
        return no_store(self.get_paginated_response(data))

    @extend_schema(
        request=CallbackJobSerializer,
        responses={
            202: JobSerializer,
            200: OpenApiResponse(JobSerializer, description="Idempotent replay."),
            400: FIELD_ERRORS,
            403: ERROR,
            413: ERROR,
            429: OpenApiResponse(
                ERROR.response,
                description="The queue is full (MAX_QUEUED), or too many jobs created lately "
                "(API_THROTTLE_RATES).",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CallbackJobSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        seconds = data.get("backoff_seconds")
        if data["backoff"] == "fixed":
            backoff: retry.Backoff = retry.Fixed(
                timedelta(seconds=10 if seconds is None else seconds)
            )
        else:
            backoff = retry.Exponential(base=timedelta(seconds=2 if seconds is None else seconds))
        key = data.get("idempotency_key")
        try:
            with services.enqueued_by(request.user):
                job, created = services.enqueue_callback(
                    url=data["callback_url"],
                    payload=data["payload"],
                    method=data["method"],
                    headers=data["headers"],
                    max_attempts=data["retries"] + 1,
                    backoff=backoff,
                    priority=data["priority"],
                    run_after=data.get("run_after"),
                    queue_name=data["queue"],
                    webhook_url=data.get("webhook_url") or "",
                    unique_key=f"api:{request.user.pk}:{key}" if key else None,
                    now=timezone.now(),
                    using=jobs_database(),
                )
        except ArgumentsTooLargeError as exc:  # the payload (with URL and headers)
            raise ValidationError({"payload": [str(exc)]}) from exc
        except QueueFullError as exc:
            response = Response({"detail": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            response["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER)
            return no_store(response)
        body = JobSerializer(job, context={"request": request}).data
        body["status_url"] = status_url(job.pk, request=request)
        body["status_token"] = make_token(job.pk)  # for the X-Job-Token header
        response = Response(body, status=status.HTTP_202_ACCEPTED if created else 200)
        response["Location"] = body["status_url"]
        if not created:
            response["Idempotent-Replayed"] = "true"
        return no_store(response, job)
