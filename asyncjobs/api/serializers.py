"""Serializers of the client API."""

import math
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from asyncjobs import outbound, services
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import Attempt, Batch, Job, JobStatus
from asyncjobs.tasks_api import task_backends
from asyncjobs.text import has_lone_surrogate


class AttemptSerializer(serializers.ModelSerializer[Attempt]):
    """One attempt; the traceback only for users with ``asyncjobs.view_job``."""

    duration = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField()

    class Meta:
        model = Attempt
        fields = (
            "number",
            "outcome",
            "worker_id",
            "started_at",
            "finished_at",
            "duration",
            "error_class",
            "error_message",
            "http_status",
            "traceback",
        )

    def get_duration(self, obj: Attempt) -> float | None:
        return obj.duration.total_seconds() if obj.duration is not None else None

    def get_traceback(self, obj: Attempt) -> str | None:
        request = self.context.get("request")
        operator = bool(request and request.user and request.user.has_perm("asyncjobs.view_job"))
        return obj.traceback if operator else None


class ProgressSerializer(serializers.Serializer[dict[str, Any]]):
    current = serializers.FloatField()
    total = serializers.FloatField(allow_null=True)
    message = serializers.CharField(allow_blank=True)
    percent = serializers.FloatField(required=False, allow_null=True)


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    error_class = serializers.CharField()
    message = serializers.CharField()


class TruncatedSerializer(serializers.Serializer[dict[str, Any]]):
    size = serializers.IntegerField(help_text="Bytes of JSON of the whole value.")
    excerpt = serializers.CharField(help_text="The beginning of its JSON text.")
    url = serializers.CharField(help_text="Where to download it whole.")


class JobSerializer(serializers.ModelSerializer[Job]):
    """A job as clients poll it."""

    task = serializers.CharField(source="task_path")
    queue = serializers.CharField(source="queue_name")
    next_attempt_at = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    result_truncated = serializers.SerializerMethodField()
    last_error = serializers.SerializerMethodField()
    history = serializers.SerializerMethodField()
    depends_on = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields: tuple[str, ...] = (
            "id",
            "task",
            "queue",
            "priority",
            "status",
            "attempts",
            "max_attempts",
            "enqueued_at",
            "run_after",
            "started_at",
            "finished_at",
            "next_attempt_at",
            "progress",
            "result",
            "result_truncated",
            "last_error",
            "depends_on",
            "history",
        )

    def _attempts(self, obj: Job) -> list[Attempt]:
        """The job's attempts, read once for the fields that need them."""
        cache: dict[Any, list[Attempt]] = self.__dict__.setdefault("_attempt_cache", {})
        if obj.pk not in cache:
            cache[obj.pk] = list(obj.attempt_set.order_by("number")) if obj.attempts else []
        return cache[obj.pk]

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_next_attempt_at(self, obj: Job) -> Any:
        """When a job waiting for a retry (or a delayed start) will run next."""
        return obj.run_after if obj.status == JobStatus.SCHEDULED else None

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, obj: Job) -> Any:
        return obj.progress

    def _result_excerpt(self, obj: Job) -> str | None:
        """The beginning of a result larger than ``MAX_DISPLAY_BYTES``, worked out once;
        None for a smaller one (or no result)."""
        cache: dict[Any, str | None] = self.__dict__.setdefault("_excerpt_cache", {})
        if obj.pk not in cache:
            cache[obj.pk] = (
                services.json_excerpt(obj.return_value, jobs_settings.MAX_DISPLAY_BYTES)
                if obj.status == JobStatus.SUCCEEDED
                else None
            )
        return cache[obj.pk]

    @extend_schema_field(OpenApiTypes.ANY)
    def get_result(self, obj: Job) -> Any:
        if obj.status != JobStatus.SUCCEEDED or self._result_excerpt(obj) is not None:
            return None
        return obj.return_value

    @extend_schema_field(TruncatedSerializer(allow_null=True))
    def get_result_truncated(self, obj: Job) -> Any:
        """For a result too large to show (then ``result`` is null): its size, its beginning
        and the URL of the whole of it (with the request's ``?token=``, if it had one)."""
        excerpt = self._result_excerpt(obj)
        if excerpt is None:
            return None
        url = reverse("asyncjobs:job-result", args=[str(obj.pk)])
        request = self.context.get("request")
        token = request.query_params.get("token") if request is not None else None
        if token:
            url = f"{url}?{urlencode({'token': token}, safe=':')}"
        return {
            "size": services.json_size(obj.return_value),
            "excerpt": excerpt,
            "url": request.build_absolute_uri(url) if request is not None else url,
        }

    @extend_schema_field(ErrorSerializer(allow_null=True))
    def get_last_error(self, obj: Job) -> Any:
        if not obj.last_error_class:
            return None
        return {"error_class": obj.last_error_class, "message": obj.last_error_message}

    @extend_schema_field(serializers.ListField(child=serializers.UUIDField()))
    def get_depends_on(self, obj: Job) -> Any:
        """The ids of the jobs this one waits for (or waited for), oldest first."""
        if obj.pending_dependencies is None:  # (set on every job that has dependencies)
            return []
        edges, _ = services.dependencies_of(obj)
        return [str(edge.parent_id) for edge in edges]

    @extend_schema_field(AttemptSerializer(many=True))
    def get_history(self, obj: Job) -> Any:
        return AttemptSerializer(self._attempts(obj), many=True, context=self.context).data


class JobListSerializer(JobSerializer):
    """A job in the staff list (no history: one query per page, not per job)."""

    class Meta(JobSerializer.Meta):
        fields = tuple(
            f for f in JobSerializer.Meta.fields if f not in {"history", "last_error", "depends_on"}
        )


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class CallbackJobSerializer(serializers.Serializer[dict[str, Any]]):
    """``POST /jobs/``: an HTTP callback job."""

    callback_url = serializers.URLField(max_length=2000)
    payload = serializers.JSONField(required=False, allow_null=True, default=None)
    method = serializers.ChoiceField(choices=METHODS, default="POST")
    headers = serializers.DictField(
        child=serializers.CharField(max_length=outbound.MAX_HEADER_VALUE),
        required=False,
        default=dict,
        help_text="Sent with the call; names must be HTTP tokens, values ISO-8859-1. "
        "Credential headers (Authorization, Cookie, ...) are shown redacted and are not sent "
        "to another origin after a redirect.",
    )
    retries = serializers.IntegerField(min_value=0, max_value=25, default=3)
    backoff = serializers.ChoiceField(choices=("exponential", "fixed"), default="exponential")
    backoff_seconds = serializers.FloatField(
        min_value=0,
        max_value=86_400,
        required=False,
        help_text="Base (exponential) or wait (fixed).",
    )
    priority = serializers.IntegerField(min_value=-100, max_value=100, default=0)
    delay = serializers.IntegerField(
        min_value=0, max_value=30 * 86_400_000, required=False, help_text="Milliseconds."
    )
    run_at = serializers.DateTimeField(required=False)
    queue = serializers.CharField(max_length=100, default="default")
    webhook_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    idempotency_key = serializers.CharField(max_length=200, required=False)

    def validate_payload(self, value: Any) -> Any:
        try:
            value = services.storable_json(value)
        except (TypeError, ValueError) as exc:
            raise serializers.ValidationError(str(exc)) from exc
        if has_lone_surrogate(value):
            # (Python callers may enqueue them; an HTTP body must be Unicode text.)
            raise serializers.ValidationError(
                "Strings cannot hold lone surrogates (\\ud800-\\udfff): they are not text."
            )
        return value

    def validate_callback_url(self, value: str) -> str:
        try:
            outbound.validate_url(value)
        except outbound.OutboundURLRefusedError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value

    def validate_webhook_url(self, value: str) -> str:
        if value:
            try:
                outbound._secret()
                outbound.validate_url(value)
            except (outbound.OutboundURLRefusedError, ConfigurationError) as exc:
                raise serializers.ValidationError(str(exc)) from exc
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        try:
            return outbound.check_headers(value)
        except outbound.InvalidHeaderError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_queue(self, value: str) -> str:
        alias = self.context.get("backend", "default")
        queues = task_backends[alias].queues
        if queues and value not in queues:
            raise serializers.ValidationError(
                f"Unknown queue; one of: {', '.join(sorted(queues))}."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "delay" in attrs and "run_at" in attrs:
            raise serializers.ValidationError({"run_at": "Give delay or run_at, not both."})
        if "delay" in attrs:
            attrs["run_after"] = timezone.now() + timedelta(milliseconds=attrs.pop("delay"))
        elif "run_at" in attrs:
            attrs["run_after"] = attrs.pop("run_at")
        return attrs


class QueueStatsSerializer(serializers.Serializer[dict[str, Any]]):
    queue = serializers.CharField()
    waiting = serializers.IntegerField(help_text="Jobs waiting for the jobs they depend on.")
    scheduled = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Dead-letter depth.")
    paused = serializers.BooleanField()
    lag_seconds = serializers.FloatField(
        allow_null=True, help_text="Age of the oldest job ready to run."
    )


class WorkerStatsSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.CharField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField()
    queues = serializers.ListField(child=serializers.CharField())
    concurrency = serializers.IntegerField()
    last_heartbeat_at = serializers.DateTimeField()
    jobs_processed = serializers.IntegerField()


class StatsSerializer(serializers.Serializer[dict[str, Any]]):
    queues = QueueStatsSerializer(many=True)
    workers = WorkerStatsSerializer(many=True)


# How many of a batch's failed jobs ``GET /jobs/batches/<id>/`` lists (``failures.count``
# says how many there are): a poll stays small however many jobs failed.
FAILURES_SHOWN = 50


class BatchCountsSerializer(serializers.Serializer[dict[str, Any]]):
    pending = serializers.IntegerField(help_text="Jobs not finished yet.")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Jobs that failed for good.")
    cancelled = serializers.IntegerField()


class BatchFailureSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.UUIDField()
    task = serializers.CharField()
    error_class = serializers.CharField()
    message = serializers.CharField()
    finished_at = serializers.DateTimeField(allow_null=True)


class BatchFailuresSerializer(serializers.Serializer[dict[str, Any]]):
    count = serializers.IntegerField(help_text="How many of the batch's jobs failed.")
    jobs = BatchFailureSerializer(
        many=True,
        help_text=f"At most {FAILURES_SHOWN} of them (the first the index gives), shown "
        "oldest failure first.",
    )


class BatchLinksSerializer(serializers.Serializer[dict[str, Any]]):
    self = serializers.CharField(help_text="This batch (with the request's ?token=, if any).")
    events = serializers.CharField(help_text="Its Server-Sent Events.")


class BatchSerializer(serializers.ModelSerializer[Batch]):
    """A batch as clients poll it: read from the batch's counters (no count over its jobs)
    and, when some failed, the first ``FAILURES_SHOWN`` failed jobs."""

    state = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    finished = serializers.IntegerField(read_only=True, help_text="Jobs that ended.")
    percent = serializers.FloatField(read_only=True, help_text="Finished jobs, 0 to 100.")
    failures = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Batch
        fields: tuple[str, ...] = (
            "id",
            "description",
            "state",
            "total",
            "counts",
            "finished",
            "percent",
            "created_at",
            "sealed_at",
            "finished_at",
            "failures",
            "links",
        )
        read_only_fields = fields

    @extend_schema_field({"type": "string", "enum": ["open", "running", "succeeded", "failed"]})
    def get_state(self, obj: Batch) -> str:
        return str(obj.state.value)

    @extend_schema_field(BatchCountsSerializer)
    def get_counts(self, obj: Batch) -> dict[str, int]:
        return {
            "pending": obj.pending,
            "succeeded": obj.succeeded,
            "failed": obj.failed,
            "cancelled": obj.cancelled,
        }

    @extend_schema_field(BatchFailuresSerializer)
    def get_failures(self, obj: Batch) -> dict[str, Any]:
        shown: list[dict[str, Any]] = []
        if obj.failed:
            # Served by the (batch, status) index, and stops at FAILURES_SHOWN rows: no sort
            # over every failed job of a large batch; the few read are ordered here.
            rows = (
                Job.objects.using(obj._state.db or "default")
                .filter(batch_id=obj.pk, status=JobStatus.FAILED)
                .order_by()
                .values_list("pk", "task_path", "last_error_class", "last_error_message",
                             "finished_at")[:FAILURES_SHOWN]
            )  # fmt: skip
            for pk, task, error_class, message, finished_at in sorted(
                rows, key=lambda row: (row[4] is None, row[4] or 0, str(row[0]))
            ):
                shown.append(
                    {
                        "id": pk,
                        "task": task,
                        "error_class": error_class,
                        "message": message,
                        "finished_at": finished_at,
                    }
                )
        one = BatchFailureSerializer()
        return {"count": obj.failed, "jobs": [one.to_representation(row) for row in shown]}

    @extend_schema_field(BatchLinksSerializer)
    def get_links(self, obj: Batch) -> dict[str, str]:
        request = self.context.get("request")
        token = request.query_params.get("token") if request is not None else None
        links = {}
        for name, route in (("self", "batch-detail"), ("events", "batch-events")):
            url = reverse(f"asyncjobs:{route}", args=[str(obj.pk)])
            if token:
                url = f"{url}?{urlencode({'token': token}, safe=':')}"
            links[name] = request.build_absolute_uri(url) if request is not None else url
        return links


def retry_after_seconds(job: Job) -> int | None:
    """How long a client should wait before polling a job in flight again."""
    if job.is_finished:
        return None
    if job.status == JobStatus.SCHEDULED:
        wait = (job.run_after - timezone.now()).total_seconds()
        return max(1, min(math.ceil(wait), 60))
    return 1 if job.status == JobStatus.RUNNING else 2


def events_max_duration() -> float:
    """How long one events stream stays open."""
    return float(jobs_settings.API_EVENTS_MAX_DURATION.total_seconds())
