"""Server-Sent Events: ``GET /jobs/<id>/events/`` for a job, and the stream machinery that
``GET /jobs/batches/<id>/events/`` shares (throttle, slots, keep-alives, the time limit)."""

import json
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from asyncjobs.api.serializers import JobSerializer, events_max_duration
from asyncjobs.api.throttling import SLOT_REFRESH, EventsThrottle, StreamSlot
from asyncjobs.api.views.common import (
    ERROR,
    TOKEN_PARAMETERS,
    HiddenJobMixin,
    jobs_database,
    no_store,
    setting_classes,
)
from asyncjobs.conf import jobs_settings
from asyncjobs.models import TERMINAL_STATUSES, Job

# What a stream reads on each turn: None when the object is gone, else (the state compared
# with the last one sent, a function building the event's data, whether it is the end).
Reading = tuple[Any, Callable[[], Any], bool] | None

EVENTS_RESPONSES = {
    (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR),
    404: ERROR,
    429: OpenApiResponse(
        ERROR.response,
        description="Too many streams opened lately (API_THROTTLE_RATES) or open "
        "at once (API_EVENTS_MAX_STREAMS).",
    ),
}


class EventStreamMixin:
    """An event stream: the ``events`` throttle, one of the caller's
    ``API_EVENTS_MAX_STREAMS`` slots, an event per change of what ``read`` returns, a
    keep-alive comment when idle, and the end after ``API_EVENTS_MAX_DURATION``."""

    poll_interval = 0.5
    keepalive_interval = 15.0  # seconds without an event before a comment line is sent
    poll_instead = "/jobs/<id>/"  # what the 429 tells a client to poll instead

    def get_throttles(self) -> list[Any]:
        return [*super().get_throttles(), EventsThrottle()]  # type: ignore[misc]

    def open_stream(self, request: Request, read: Callable[[], Reading]) -> Any:
        """The streaming response, or a 429 when the caller holds every slot."""
        slot = StreamSlot.acquire(request)
        if slot is None:
            limit = jobs_settings.API_EVENTS_MAX_STREAMS
            detail = (
                f"Too many open event streams (at most {limit} at once); close one, or "
                f"poll {self.poll_instead}."
            )
            return no_store(Response({"detail": detail}, status=429))
        events = _SlotStream(self._stream(read, slot), slot)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return no_store(response)

    def _stream(self, read: Callable[[], Reading], slot: StreamSlot) -> Generator[bytes]:
        deadline = time.monotonic() + events_max_duration()
        last: Any = None
        last_sent = last_refresh = time.monotonic()
        yield b"retry: 2000\n\n"
        while True:
            if time.monotonic() - last_refresh > SLOT_REFRESH:
                slot.refresh()
                last_refresh = time.monotonic()
            reading = read()
            if reading is None:
                yield b"event: gone\ndata: {}\n\n"
                return
            state, data, ended = reading
            if state != last:
                last = state
                body = json.dumps(data(), default=str)
                event = "end" if ended else "status"
                yield f"event: {event}\ndata: {body}\n\n".encode()
                last_sent = time.monotonic()
                if ended:
                    return
            elif time.monotonic() - last_sent > self.keepalive_interval:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            if time.monotonic() > deadline:
                yield b"event: timeout\ndata: {}\n\n"
                return
            time.sleep(self.poll_interval)


class JobEventsView(EventStreamMixin, HiddenJobMixin):
    """``GET /jobs/<id>/events/``: Server-Sent Events, one per change of status, attempts or
    progress; the stream ends with the job (or after ``API_EVENTS_MAX_DURATION``)."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in setting_classes("API_READ_PERMISSION_CLASSES")]

    @extend_schema(parameters=TOKEN_PARAMETERS, responses=EVENTS_RESPONSES)
    def get(self, request: Request, job_id: str) -> Any:
        job = self.get_job()
        return self.open_stream(request, lambda: self._read(job.pk, request))

    def _read(self, job_id: uuid.UUID, request: Request) -> Reading:
        job = Job.objects.using(jobs_database()).filter(pk=job_id).first()
        if job is None:
            return None
        state = (job.status, job.attempts, json.dumps(job.progress, sort_keys=True))
        return (
            state,
            lambda: JobSerializer(job, context={"request": request}).data,
            job.status in TERMINAL_STATUSES,
        )


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
