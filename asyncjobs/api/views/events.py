"""``GET /jobs/<id>/events/``: a job's changes as Server-Sent Events."""

import json
import time
import uuid
from collections.abc import Generator, Iterator
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


class JobEventsView(HiddenJobMixin):
    """``GET /jobs/<id>/events/``: Server-Sent Events, one per change of status, attempts or
    progress; the stream ends with the job (or after ``API_EVENTS_MAX_DURATION``)."""

    poll_interval = 0.5
    keepalive_interval = 15.0  # seconds without an event before a comment line is sent

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in setting_classes("API_READ_PERMISSION_CLASSES")]

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
            return no_store(Response({"detail": detail}, status=429))
        events = _SlotStream(self._stream(job.pk, request, slot), slot)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return no_store(response)

    def _stream(self, job_id: uuid.UUID, request: Request, slot: StreamSlot) -> Generator[bytes]:
        deadline = time.monotonic() + events_max_duration()
        last: Any = None
        last_sent = last_refresh = time.monotonic()
        yield b"retry: 2000\n\n"
        while True:
            if time.monotonic() - last_refresh > SLOT_REFRESH:
                slot.refresh()
                last_refresh = time.monotonic()
            job = Job.objects.using(jobs_database()).filter(pk=job_id).first()
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
