"""Views of the client API: poll a job, stream its events, retry or cancel it, list and
count jobs (staff), create HTTP callback jobs."""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NoReturn

from django.db.models import Count, Min
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asyncjobs import retry, services
from asyncjobs.api.parsers import BoundedJSONParser
from asyncjobs.api.permissions import CanCancelJob, CanPauseQueue, CanRetryJob
from asyncjobs.api.serializers import (
    CallbackJobSerializer,
    JobListSerializer,
    JobSerializer,
    StatsSerializer,
    events_max_duration,
    retry_after_seconds,
)
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import InvalidTransitionError, JobNotFoundError, QueueFullError
from asyncjobs.models import TERMINAL_STATUSES, Job, JobStatus, Worker
from asyncjobs.tokens import status_url

# Seconds a client should wait before enqueueing again into a full queue.
QUEUE_FULL_RETRY_AFTER = 10

ERROR = OpenApiResponse(
    inline_serializer("Detail", {"detail": serializers.CharField()}),
    description="The reason, in detail.",
)
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Field errors: each field's name with its messages."
)
TOKEN_PARAMETER = OpenApiParameter(
    "token", OpenApiTypes.STR, OpenApiParameter.QUERY, description="A job's status token."
)


def _classes(setting: str) -> list[Any]:
    return [import_string(path) for path in getattr(jobs_settings, setting)]


def _database() -> str:
    from asyncjobs.tasks_api import task_backends

    return str(getattr(task_backends["default"], "database", "default"))


class JobMixin(APIView):
    """Look a job up by id; unknown or malformed ids are 404."""

    parser_classes = (BoundedJSONParser,)

    def get_job(self) -> Job:
        raw = self.kwargs["job_id"]
        try:
            job_id = uuid.UUID(str(raw))
        except ValueError as exc:
            raise NotFound("No such job.") from exc
        job = Job.objects.using(_database()).filter(pk=job_id).first()
        if job is None:
            raise NotFound("No such job.")
        self.check_object_permissions(self.request, job)
        return job


class HiddenJobMixin(JobMixin):
    """Reading: whoever may not see a job is not told that it exists (404, not 403)."""

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        raise NotFound("No such job.")


def _no_store(response: Any, job: Job | None = None) -> Any:
    patch_cache_control(response, no_store=True, private=True, max_age=0)
    if job is not None:
        wait = retry_after_seconds(job)
        if wait is not None:
            response["Retry-After"] = str(wait)
    return response


class JobDetailView(HiddenJobMixin):
    """``GET /jobs/<id>/``: the job, for staff, its owner or the holder of its token."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(
        parameters=[TOKEN_PARAMETER],
        responses={200: JobSerializer, 404: ERROR},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        data = JobSerializer(job, context={"request": request}).data
        return _no_store(Response(data), job)


class JobEventsView(HiddenJobMixin):
    """``GET /jobs/<id>/events/``: Server-Sent Events, one per change of status, attempts or
    progress; the stream ends with the job (or after ``API_EVENTS_MAX_DURATION``)."""

    poll_interval = 0.5

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(
        parameters=[TOKEN_PARAMETER],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR),
            404: ERROR,
        },
    )
    def get(self, request: Request, job_id: str) -> StreamingHttpResponse:
        job = self.get_job()
        response = StreamingHttpResponse(
            self._stream(job.pk, request), content_type="text/event-stream"
        )
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return _no_store(response)

    def _stream(self, job_id: uuid.UUID, request: Request) -> Iterator[bytes]:
        deadline = time.monotonic() + events_max_duration()
        last: Any = None
        last_sent = time.monotonic()
        yield b"retry: 2000\n\n"
        while True:
            job = Job.objects.using(_database()).filter(pk=job_id).first()
            if job is None:
                yield b"event: gone\ndata: {}\n\n"
                return
            state = (job.status, job.attempts, json.dumps(job.progress, sort_keys=True))
            if state != last:
                last = state
                data = JobSerializer(job, context={"request": request}).data
                body = json.dumps(data, default=str)
                event = "end" if job.status in TERMINAL_STATUSES else "status"
                yield f"event: {event}\ndata: {body}\n\n".encode()
                last_sent = time.monotonic()
                if event == "end":
                    return
            elif time.monotonic() - last_sent > 15:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            if time.monotonic() > deadline:
                yield b"event: timeout\ndata: {}\n\n"
                return
            time.sleep(self.poll_interval)


class _JobActionView(JobMixin):
    """Retry or cancel through the same services the Python API and the admin use."""

    service: Any = None  # services.retry_job or services.cancel_job

    @extend_schema(
        request=None,
        responses={200: JobSerializer, 403: ERROR, 404: ERROR, 409: ERROR},
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        try:
            job = type(self).service(job.pk, using=_database())
        except InvalidTransitionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except JobNotFoundError as exc:
            raise NotFound("No such job.") from exc
        return _no_store(Response(JobSerializer(job, context={"request": request}).data), job)


class JobRetryView(_JobActionView):
    """``POST /jobs/<id>/retry/``: a failed or cancelled job back to queued."""

    service = staticmethod(services.retry_job)
    permission_classes = (CanRetryJob,)


class JobCancelView(_JobActionView):
    """``POST /jobs/<id>/cancel/``: cancel a waiting job, ask a running one to stop."""

    service = staticmethod(services.cancel_job)
    permission_classes = (CanCancelJob,)


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


class JobListCreateView(generics.GenericAPIView[Job]):
    """``GET /jobs/``: jobs for staff, filtered by ``status``, ``queue``, ``task``.
    ``POST /jobs/``: create an HTTP callback job (202 Accepted)."""

    pagination_class = JobPagination
    serializer_class = JobListSerializer
    parser_classes = (BoundedJSONParser,)
    throttle_scope = "asyncjobs"

    def get_permissions(self) -> list[Any]:
        setting = (
            "API_CREATE_PERMISSION_CLASSES"
            if self.request.method == "POST"
            else "API_ADMIN_PERMISSION_CLASSES"
        )
        return [cls() for cls in _classes(setting)]

    def get_serializer_class(self) -> Any:
        return CallbackJobSerializer if self.request.method == "POST" else JobListSerializer

    def get_queryset(self) -> Any:
        jobs = Job.objects.using(_database()).all()
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
        return _no_store(self.get_paginated_response(data))

    @extend_schema(
        request=CallbackJobSerializer,
        responses={
            202: JobSerializer,
            200: OpenApiResponse(JobSerializer, description="Idempotent replay."),
            400: FIELD_ERRORS,
            403: ERROR,
            413: ERROR,
            429: OpenApiResponse(ERROR.response, description="The queue is full (MAX_QUEUED)."),
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
                    using=_database(),
                )
        except QueueFullError as exc:
            response = Response({"detail": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            response["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER)
            return _no_store(response)
        body = JobSerializer(job, context={"request": request}).data
        body["status_url"] = status_url(job.pk, request=request)
        response = Response(body, status=status.HTTP_202_ACCEPTED if created else 200)
        response["Location"] = body["status_url"]
        if not created:
            response["Idempotent-Replayed"] = "true"
        return _no_store(response, job)


class StatsView(APIView):
    """``GET /jobs/stats/``: per queue the jobs waiting, running and failed, the lag, and the
    live workers (staff)."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_ADMIN_PERMISSION_CLASSES")]

    @extend_schema(responses={200: StatsSerializer, 403: ERROR})
    def get(self, request: Request) -> Response:
        now = timezone.now()
        jobs = Job.objects.using(_database())
        counted = (
            jobs.filter(
                status__in=[
                    JobStatus.SCHEDULED,
                    JobStatus.QUEUED,
                    JobStatus.RUNNING,
                    JobStatus.FAILED,
                ]
            )
            .values("queue_name", "status")
            .annotate(n=Count("pk"))
            .order_by()
        )
        queues: dict[str, dict[str, Any]] = {}
        for row in counted:
            entry = queues.setdefault(
                row["queue_name"],
                {
                    "queue": row["queue_name"],
                    "scheduled": 0,
                    "queued": 0,
                    "running": 0,
                    "failed": 0,
                },
            )
            entry[row["status"]] = row["n"]
        oldest = jobs.ready().values("queue_name").annotate(oldest=Min("run_after")).order_by()
        lags = {row["queue_name"]: row["oldest"] for row in oldest}
        for name, entry in queues.items():
            due = lags.get(name)
            entry["lag_seconds"] = max((now - due).total_seconds(), 0.0) if due else None
        paused = services.paused_queues(using=_database())
        for name in paused - set(queues):
            queues[name] = {"queue": name, "scheduled": 0, "queued": 0, "running": 0, "failed": 0}
        for name, entry in queues.items():
            entry["paused"] = name in paused
            entry.setdefault("lag_seconds", None)
        workers = Worker.objects.using(_database()).alive(now, jobs_settings.LEASE_DURATION)
        data = {
            "queues": sorted(queues.values(), key=lambda q: q["queue"]),
            "workers": [
                {
                    "id": w.id,
                    "hostname": w.hostname,
                    "pid": w.pid,
                    "queues": w.queues,
                    "concurrency": w.concurrency,
                    "last_heartbeat_at": w.last_heartbeat_at,
                    "jobs_processed": w.jobs_processed,
                }
                for w in workers.order_by("id")
            ],
        }
        return _no_store(Response(StatsSerializer(data).data))


class QueuePauseView(APIView):
    """``POST /jobs/queues/<name>/pause/`` and ``.../resume/`` (``asyncjobs.pause_queue``)."""

    permission_classes = (CanPauseQueue,)
    parser_classes = (BoundedJSONParser,)
    paused = True

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "QueueState",
                {"queue": serializers.CharField(), "paused": serializers.BooleanField()},
            ),
            400: ERROR,
            403: ERROR,
        },
    )
    def post(self, request: Request, name: str) -> Response:
        from asyncjobs.tasks_api import task_backends

        queues = task_backends["default"].queues
        if queues and name not in queues:
            return Response({"detail": f"Unknown queue {name!r}."}, status=400)
        services.set_queue_paused(name, self.paused, now=timezone.now(), using=_database())
        return _no_store(Response({"queue": name, "paused": self.paused}))
