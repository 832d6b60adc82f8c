"""The operator's endpoints: queue statistics, pause and resume."""

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from asyncjobs import monitoring, services
from asyncjobs.api.descriptions import DescribedView
from asyncjobs.api.parsers import BoundedJSONParser
from asyncjobs.api.permissions import CanPauseQueue
from asyncjobs.api.serializers import StatsSerializer
from asyncjobs.api.views.common import ERROR, jobs_database, no_store, setting_classes
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import UnknownQueueError
from asyncjobs.models import Worker


class StatsView(DescribedView, APIView):
    """``GET /jobs/stats/``: for every queue (``monitoring.queue_snapshots``, as the dashboard)
    the jobs waiting, running and failed, the lag, and the live workers
    (``asyncjobs.view_job``)."""

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in setting_classes("API_ADMIN_PERMISSION_CLASSES")]

    @extend_schema(responses={200: StatsSerializer, 403: ERROR})
    def get(self, request: Request) -> Response:
        now = timezone.now()
        queues = [
            {
                "queue": q.name,
                "waiting": q.waiting,
                "scheduled": q.scheduled,
                "queued": q.queued,
                "running": q.running,
                "failed": q.failed,
                "lag_seconds": q.lag_seconds,
                "paused": q.paused,
            }
            for q in monitoring.queue_snapshots(now=now, using=jobs_database())
        ]
        workers = Worker.objects.using(jobs_database()).alive(now, jobs_settings.LEASE_DURATION)
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
        return no_store(Response(StatsSerializer(data).data))


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
                name, self.paused, now=timezone.now(), using=jobs_database(), user=request.user
            )
        except UnknownQueueError as exc:
            return no_store(Response({"detail": str(exc)}, status=400))
        return no_store(Response({"queue": name, "paused": self.paused}))
