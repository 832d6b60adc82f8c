"""Serializers of the client API."""

import math
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from asyncjobs import outbound, services
from asyncjobs.conf import jobs_settings
from asyncjobs.models import Attempt, Job, JobStatus
from asyncjobs.tasks_api import task_backends


class AttemptSerializer(serializers.ModelSerializer[Attempt]):
    """One attempt; the traceback only for staff."""

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
        staff = bool(request and request.user and request.user.is_staff)
        return obj.traceback if staff else None


class ProgressSerializer(serializers.Serializer[dict[str, Any]]):
    current = serializers.FloatField()
    total = serializers.FloatField(allow_null=True)
    message = serializers.CharField(allow_blank=True)
    percent = serializers.FloatField(required=False, allow_null=True)


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    error_class = serializers.CharField()
    message = serializers.CharField()


class JobSerializer(serializers.ModelSerializer[Job]):
    """A job as clients poll it."""

    task = serializers.CharField(source="task_path")
    queue = serializers.CharField(source="queue_name")
    next_attempt_at = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    last_error = serializers.SerializerMethodField()
    history = serializers.SerializerMethodField()

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
            "last_error",
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

    @extend_schema_field(OpenApiTypes.ANY)
    def get_result(self, obj: Job) -> Any:
        return obj.return_value if obj.status == JobStatus.SUCCEEDED else None

    @extend_schema_field(ErrorSerializer(allow_null=True))
    def get_last_error(self, obj: Job) -> Any:
        if not obj.last_error_class:
            return None
        return {"error_class": obj.last_error_class, "message": obj.last_error_message}

    @extend_schema_field(AttemptSerializer(many=True))
    def get_history(self, obj: Job) -> Any:
        return AttemptSerializer(self._attempts(obj), many=True, context=self.context).data


class JobListSerializer(JobSerializer):
    """A job in the staff list (no history: one query per page, not per job)."""

    class Meta(JobSerializer.Meta):
        fields = tuple(f for f in JobSerializer.Meta.fields if f not in {"history", "last_error"})


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)


def _sendable_header_value(value: str) -> bool:
    """Whether an HTTP header can carry ``value``: ISO-8859-1, no control characters
    (a CR or LF would split the header)."""
    return all(ch == "\t" or (" " <= ch <= "~") or ("\xa0" <= ch <= "\xff") for ch in value)


class CallbackJobSerializer(serializers.Serializer[dict[str, Any]]):
    """``POST /jobs/``: an HTTP callback job."""

    callback_url = serializers.URLField(max_length=2000)
    payload = serializers.JSONField(required=False, allow_null=True, default=None)
    method = serializers.ChoiceField(choices=METHODS, default="POST")
    headers = serializers.DictField(
        child=serializers.CharField(max_length=4096), required=False, default=dict
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
            return services.storable_json(value)
        except (TypeError, ValueError) as exc:
            raise serializers.ValidationError(str(exc)) from exc

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
            except outbound.OutboundURLRefusedError as exc:
                raise serializers.ValidationError(str(exc)) from exc
            except Exception as exc:  # no WEBHOOK_SECRET configured
                raise serializers.ValidationError(str(exc)) from exc
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise serializers.ValidationError("At most 50 headers.")
        bad = sorted(
            k
            for k in value
            if k.lower() in FORBIDDEN_HEADERS or not k.isascii() or not k.isprintable()
        )
        if bad:
            raise serializers.ValidationError(f"These headers cannot be set: {', '.join(bad)}.")
        unsendable = sorted(k for k, v in value.items() if not _sendable_header_value(v))
        if unsendable:
            raise serializers.ValidationError(
                "These header values have control characters or characters outside "
                f"ISO-8859-1: {', '.join(unsendable)}."
            )
        return value

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
