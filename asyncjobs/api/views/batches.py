"""One batch: its progress (``GET /jobs/batches/<id>/``) and its events
(``GET /jobs/batches/<id>/events/``)."""

import uuid
from typing import Any, NoReturn

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asyncjobs.api.descriptions import DescribedView
from asyncjobs.api.parsers import BoundedJSONParser
from asyncjobs.api.serializers import BatchSerializer
from asyncjobs.api.views.common import (
    ERROR,
    get_or_404,
    jobs_database,
    no_store,
    setting_classes,
)
from asyncjobs.api.views.events import EVENTS_RESPONSES, EventStreamMixin, Reading
from asyncjobs.models import Batch, BatchState

# Seconds a poller should wait before asking about a batch in flight again.
BATCH_RETRY_AFTER = 2

BATCH_TOKEN_PARAMETERS = [
    OpenApiParameter(
        "X-Job-Token",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="The batch's status token (tokens.make_batch_token; a job's token does "
        "not open a batch).",
    ),
    OpenApiParameter(
        "token",
        OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        description="The batch's status token, for clients that cannot send headers.",
    ),
]


def is_done(batch: Batch) -> bool:
    """Whether ``batch`` is sealed and every job of it ended."""
    return batch.state in (BatchState.SUCCEEDED, BatchState.FAILED)


class BatchMixin(DescribedView, APIView):
    """Look a batch up by id; unknown, malformed and unreadable ids are 404 (whoever may not
    read a batch is not told that it exists)."""

    parser_classes = (BoundedJSONParser,)

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in setting_classes("API_BATCH_READ_PERMISSION_CLASSES")]

    def get_batch(self) -> Batch:
        return get_or_404(self, Batch, self.kwargs["batch_id"], "batch")

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        raise NotFound("No such batch.")


class BatchDetailView(BatchMixin):
    """``GET /jobs/batches/<id>/``: a batch's state, counts, percent and failed jobs, for
    ``asyncjobs.view_job``, the user it was enqueued for or the holder of its batch token."""

    @extend_schema(parameters=BATCH_TOKEN_PARAMETERS, responses={200: BatchSerializer, 404: ERROR})
    def get(self, request: Request, batch_id: str) -> Response:
        batch = self.get_batch()
        response = no_store(Response(BatchSerializer(batch, context={"request": request}).data))
        if not is_done(batch):
            response["Retry-After"] = str(BATCH_RETRY_AFTER)
        return response


class BatchEventsView(EventStreamMixin, BatchMixin):
    """``GET /jobs/batches/<id>/events/``: Server-Sent Events, one per change of the batch's
    counts; the stream ends when every job of the sealed batch ended (or after
    ``API_EVENTS_MAX_DURATION``)."""

    poll_instead = "/jobs/batches/<id>/"

    @extend_schema(parameters=BATCH_TOKEN_PARAMETERS, responses=EVENTS_RESPONSES)
    def get(self, request: Request, batch_id: str) -> Any:
        batch = self.get_batch()
        return self.open_stream(request, lambda: self._read(batch.pk, request))

    def _read(self, batch_id: uuid.UUID, request: Request) -> Reading:
        # One primary-key read per turn; the failed jobs are read only when the counts moved.
        batch = Batch.objects.using(jobs_database()).filter(pk=batch_id).first()
        if batch is None:
            return None
        state = (
            batch.total,
            batch.pending,
            batch.succeeded,
            batch.failed,
            batch.cancelled,
            batch.sealed_at,
            batch.finished_at,
        )
        return (
            state,
            lambda: BatchSerializer(batch, context={"request": request}).data,
            is_done(batch),
        )
