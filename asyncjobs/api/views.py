"""Views of the client API: poll a job, stream its events, retry or cancel it, list and
count jobs (``asyncjobs.view_job``), pause queues, create HTTP callback jobs."""

import json
import time
import uuid
from collections.abc import Generator, Iterator
from datetime import timedelta
from typing import Any, NoReturn

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
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asyncjobs import monitoring, retry, services
from asyncjobs.api.descriptions import DescribedView
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
from asyncjobs.api.throttling import SLOT_REFRESH, CreateJobThrottle, EventsThrottle, StreamSlot
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import (
    ArgumentsTooLargeError,
    InvalidTransitionError,
    JobNotFoundError,
    QueueFullError,
    UnknownQueueError,
)
from asyncjobs.models import TERMINAL_STATUSES, Job, JobStatus, Worker
from asyncjobs.tokens import make_token, status_url

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


def _classes(setting: str) -> list[Any]:
    return [import_string(path) for path in getattr(jobs_settings, setting)]


def _database() -> str:
    from asyncjobs.tasks_api import task_backends

    return str(getattr(task_backends["default"], "database", "default"))


class JobMixin(DescribedView, APIView):
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


def _may_read(view: APIView, request: Request, job: Job) -> bool:
    """Whether the request may read ``job`` under ``API_READ_PERMISSION_CLASSES``."""
    return all(
        p.has_permission(request, view) and p.has_object_permission(request, view, job)
        for p in (cls() for cls in _classes("API_READ_PERMISSION_CLASSES"))
    )


def _no_store(response: Any, job: Job | None = None) -> Any:
    patch_cache_control(response, no_store=True, private=True, max_age=0)
    if job is not None:
        wait = retry_after_seconds(job)
        if wait is not None:
            response["Retry-After"] = str(wait)
    return response


class JobDetailView(HiddenJobMixin):
    """``GET /jobs/<id>/``: the job, for ``asyncjobs.view_job``, its owner or the holder of
    its token."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(
        parameters=TOKEN_PARAMETERS,
        responses={200: JobSerializer, 404: ERROR},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        data = JobSerializer(job, context={"request": request}).data
        return _no_store(Response(data), job)


class JobResultView(HiddenJobMixin):
    """``GET /jobs/<id>/result/``: the whole return value of a succeeded job, however large
    (the job's ``result`` is truncated past ``MAX_DISPLAY_BYTES``); for the job's readers."""

    renderer_classes = (JSONRenderer,)  # a download: no browsable page around a large value

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(
        parameters=TOKEN_PARAMETERS,
        responses={200: OpenApiResponse(OpenApiTypes.ANY), 404: ERROR},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = self.get_job()
        if job.status != JobStatus.SUCCEEDED:
            raise NotFound(f"The job has no result: it is {job.status}.")
        return _no_store(Response(job.return_value))


class JobEventsView(HiddenJobMixin):
    """``GET /jobs/<id>/events/``: Server-Sent Events, one per change of status, attempts or
    progress; the stream ends with the job (or after ``API_EVENTS_MAX_DURATION``)."""

    poll_interval = 0.5
    keepalive_interval = 15.0  # seconds without an event before a comment line is sent

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_READ_PERMISSION_CLASSES")]

    def get_throttles(self) -> list[Any]:
        return [*super().get_throttles(), EventsThrottle()]

    @extend_schema(
        parameters=TOKEN_PARAMETERS,
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR),
            404: ERROR,
            429: OpenApiResponse(
                ERROR.response,
                description="Too many streams opened lately (API_THROTTLE_RATES) or open "
                "at once (API_EVENTS_MAX_STREAMS).",
            ),
        },
    )
    def get(self, request: Request, job_id: str) -> Any:
        job = self.get_job()
        slot = StreamSlot.acquire(request)
        if slot is None:
            limit = jobs_settings.API_EVENTS_MAX_STREAMS
            detail = (
                f"Too many open event streams (at most {limit} at once); close one, or "
                f"poll /jobs/<id>/."
            )
            return _no_store(Response({"detail": detail}, status=429))
        events = _SlotStream(self._stream(job.pk, request, slot), slot)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return _no_store(response)

    def _stream(self, job_id: uuid.UUID, request: Request, slot: StreamSlot) -> Generator[bytes]:
        deadline = time.monotonic() + events_max_duration()
        last: Any = None
        last_sent = last_refresh = time.monotonic()
        yield b"retry: 2000\n\n"
        while True:
            if time.monotonic() - last_refresh > SLOT_REFRESH:
                slot.refresh()
                last_refresh = time.monotonic()
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
            elif time.monotonic() - last_sent > self.keepalive_interval:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            if time.monotonic() > deadline:
                yield b"event: timeout\ndata: {}\n\n"
                return
            time.sleep(self.poll_interval)


class _SlotStream:
    """An event stream that gives its ``StreamSlot`` back when the server closes the
    response: at its end, and when the client went away (WSGI and ASGI servers close every
    response, even one whose stream never started)."""

    def __init__(self, events: Generator[bytes], slot: StreamSlot) -> None:
        self.events = events
        self.slot = slot

    def __iter__(self) -> Iterator[bytes]:
        return self.events

    def close(self) -> None:
        try:
            self.events.close()
        finally:
            self.slot.release()


class _JobActionView(JobMixin):
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
        may_read = _may_read(self, request, job)
        action = type(self).action_permission()
        may_act = action.has_permission(request, self) and action.has_object_permission(
            request, self, job
        )
        if not may_act:
            if not may_read:
                raise NotFound("No such job.")
            self.permission_denied(request, message=getattr(action, "message", None))
        try:
            job = type(self).service(job.pk, using=_database())
        except InvalidTransitionError as exc:
            return _no_store(Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT))
        except JobNotFoundError as exc:
            raise NotFound("No such job.") from exc
        if not may_read:
            return _no_store(Response({"id": str(job.pk), "status": job.status}))
        return _no_store(Response(JobSerializer(job, context={"request": request}).data), job)


class JobRetryView(_JobActionView):
    """``POST /jobs/<id>/retry/``: a failed or cancelled job back to queued
    (``asyncjobs.retry_job``)."""

    service = staticmethod(services.retry_job)
    action_permission = CanRetryJob


class JobCancelView(_JobActionView):
    """``POST /jobs/<id>/cancel/``: cancel a waiting job, ask a running one to stop
    (``asyncjobs.cancel_job``, or the user the job was enqueued for)."""

    service = staticmethod(services.cancel_job)
    action_permission = CanCancelJob


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
                    using=_database(),
                )
        except ArgumentsTooLargeError as exc:  # the payload (with URL and headers)
            raise ValidationError({"payload": [str(exc)]}) from exc
        except QueueFullError as exc:
            response = Response({"detail": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            response["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER)
            return _no_store(response)
        body = JobSerializer(job, context={"request": request}).data
        body["status_url"] = status_url(job.pk, request=request)
        body["status_token"] = make_token(job.pk)  # for the X-Job-Token header
        response = Response(body, status=status.HTTP_202_ACCEPTED if created else 200)
        response["Location"] = body["status_url"]
        if not created:
            response["Idempotent-Replayed"] = "true"
        return _no_store(response, job)


class StatsView(DescribedView, APIView):
    """``GET /jobs/stats/``: for every queue (``monitoring.queue_snapshots``, as the dashboard)
    the jobs waiting, running and failed, the lag, and the live workers
    (``asyncjobs.view_job``)."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in _classes("API_ADMIN_PERMISSION_CLASSES")]

    @extend_schema(responses={200: StatsSerializer, 403: ERROR})
    def get(self, request: Request) -> Response:
        now = timezone.now()
        queues = [
            {
                "queue": q.name,
                "scheduled": q.scheduled,
                "queued": q.queued,
                "running": q.running,
                "failed": q.failed,
                "lag_seconds": q.lag_seconds,
                "paused": q.paused,
            }
            for q in monitoring.queue_snapshots(now=now, using=_database())
        ]
        workers = Worker.objects.using(_database()).alive(now, jobs_settings.LEASE_DURATION)
        data = {
            "queues": queues,
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


class QueuePauseView(DescribedView, APIView):
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
        try:
            services.set_queue_paused(
                name, self.paused, now=timezone.now(), using=_database(), user=request.user
            )
        except UnknownQueueError as exc:
            return _no_store(Response({"detail": str(exc)}, status=400))
        return _no_store(Response({"queue": name, "paused": self.paused}))
