"""Prometheus metrics, read from the database at scrape time (prometheus-client).

Include the view and protect it::

    path("metrics/", asyncjobs.metrics.metrics_view)

Users with the ``asyncjobs.view_job`` permission may read it (``is_staff`` alone does not); a
scraper sends ``Authorization: Bearer <ASYNCJOBS["METRICS_TOKEN"]>``.
"""

import hmac
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, HistogramMetricFamily

from asyncjobs import monitoring
from asyncjobs.conf import jobs_settings


class JobsCollector:
    """Queue depth, lag, dead-letter depth, workers, recent outcomes and durations."""

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def collect(self) -> Iterator[Any]:
        now = timezone.now()
        snap = monitoring.snapshot(now=now, using=self.using)
        depth = GaugeMetricFamily(
            "asyncjobs_jobs",
            "Jobs waiting or running, by queue and status.",
            labels=["queue", "status"],
        )
        lag = GaugeMetricFamily(
            "asyncjobs_queue_lag_seconds", "Age of the oldest ready job.", labels=["queue"]
        )
        dead = GaugeMetricFamily(
            "asyncjobs_dead_letter_jobs", "Failed jobs (the dead letter).", labels=["queue"]
        )
        paused = GaugeMetricFamily("asyncjobs_queue_paused", "1 if paused.", labels=["queue"])
        for q in snap.queues:
            for status in ("waiting", "scheduled", "queued", "running"):
                depth.add_metric([q.name, status], getattr(q, status))
            lag.add_metric([q.name], q.lag_seconds or 0.0)
            dead.add_metric([q.name], q.failed)
            paused.add_metric([q.name], 1.0 if q.paused else 0.0)
        yield from (depth, lag, dead, paused)
        workers = GaugeMetricFamily("asyncjobs_workers", "Workers by health.", labels=["health"])
        healthy = sum(1 for w in snap.workers if w["healthy"])
        workers.add_metric(["healthy"], healthy)
        workers.add_metric(["stale"], len(snap.workers) - healthy)
        yield workers
        window = int(monitoring.METRICS_WINDOW.total_seconds())
        outcomes = GaugeMetricFamily(
            "asyncjobs_attempts_recent",
            f"Attempts finished in the last {window} s, by outcome.",
            labels=["outcome"],
        )
        for outcome, n in sorted(monitoring.outcomes_recent(now=now, using=self.using).items()):
            outcomes.add_metric([outcome or "running"], n)
        yield outcomes
        counts, seconds, _ = monitoring.duration_histogram(now=now, using=self.using)
        bounds = [str(b) for b in monitoring.DURATION_BUCKETS] + ["+Inf"]
        histogram = HistogramMetricFamily(
            "asyncjobs_attempt_duration_seconds",
            f"Durations of the attempts finished in the last {window} s.",
        )
        histogram.add_metric([], list(zip(bounds, counts, strict=True)), sum_value=seconds)
        yield histogram


def _allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.has_perm("asyncjobs.view_job"):
        return True
    token = jobs_settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    # As bytes: compare_digest refuses str holding non-ASCII characters (a TypeError, a 500).
    expected = f"Bearer {token}".encode("utf-8", "surrogatepass")
    return bool(token) and hmac.compare_digest(header.encode("utf-8", "surrogatepass"), expected)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition; 403 unless the user has ``asyncjobs.view_job`` or the
    bearer token matches."""
    if not _allowed(request):
        return HttpResponse("Forbidden", status=403, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector())
    response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
