"""The ``ASYNCJOBS`` settings dict, read lazily over ``DEFAULTS``.

``jobs_settings.LEASE_DURATION`` reads ``settings.ASYNCJOBS["LEASE_DURATION"]`` if set, else the
default. Values are cached and the cache is dropped on ``setting_changed`` so that
``override_settings`` works in tests.
"""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Retry policy, used when neither the task nor its queue says otherwise.
    "MAX_ATTEMPTS": 3,
    # None means asyncjobs.retry.Exponential(): 2 s base, factor 2, 1 h cap, full jitter.
    "BACKOFF": None,
    "TIMEOUT": None,
    # Exception classes (or dotted paths) that are retried / that fail the job at once.
    "RETRY_ON": ("builtins.Exception",),
    "FAIL_ON": (),
    "MAX_QUEUED": None,
    # Size limits, in bytes of the JSON text stored: a job's arguments (args and kwargs
    # together; enqueueing more raises ArgumentsTooLargeError) and a task's return value
    # (more fails the attempt at once). None: no limit.
    "MAX_ARGUMENTS_BYTES": 1024 * 1024,
    "MAX_RESULT_BYTES": 1024 * 1024,
    # The admin and the API show a JSON value (arguments, result) larger than this truncated,
    # with a link to download it whole.
    "MAX_DISPLAY_BYTES": 64 * 1024,
    # Per queue only (in QUEUES): "RATE_LIMIT": "10/s" (starts per second, minute or hour,
    # across all workers) and "CONCURRENCY": 5 (jobs running at once, cluster-wide).
    "RATE_LIMIT": None,
    "CONCURRENCY": None,
    # Per-queue overrides of the keys above, plus MAX_QUEUED (backpressure: enqueueing past
    # that many waiting jobs raises QueueFullError), RATE_LIMIT and CONCURRENCY:
    # {"emails": {"MAX_ATTEMPTS": 5, "RATE_LIMIT": "10/s"}}.
    "QUEUES": {},
    # How long the API's idempotency keys return the same job after it succeeded.
    "IDEMPOTENCY_KEY_TTL": timedelta(hours=24),
    # The worker.
    "LEASE_DURATION": timedelta(seconds=60),
    "HEARTBEAT_INTERVAL": timedelta(seconds=10),
    "POLL_INTERVAL": timedelta(seconds=1),
    "SHUTDOWN_TIMEOUT": timedelta(seconds=30),
    "MAINTENANCE_INTERVAL": timedelta(seconds=15),
    # PostgreSQL behind a connection pooler in transaction mode (PgBouncer): "transaction"
    # turns off what needs a session of its own (LISTEN, unless LISTEN_DATABASE names a
    # direct connection). None: detected, "transaction" when the database sets
    # DISABLE_SERVER_SIDE_CURSORS (as Django asks for behind such a pooler); "session": off.
    "POOL_MODE": None,
    # A DATABASES alias with a direct connection (not through the pooler) for the workers'
    # LISTEN; None: the jobs' own database.
    "LISTEN_DATABASE": None,
    "WORKER_RETENTION": timedelta(days=1),
    # A worker whose timed-out threads will not stop exits for its supervisor to restart it
    # once this many are stuck. None means the worker's concurrency.
    "MAX_STUCK_THREADS": None,
    # Resident memory (MiB) past which a worker fails its running attempts and exits with
    # status 4 for its supervisor to restart it; None: no limit. runworker --max-memory.
    "WORKER_MAX_MEMORY": None,
    # Jobs a worker may claim ahead of its free slots, so that slots never wait for a claim
    # and claims come in batches; how many it holds adapts to about 0.1 s of work at the
    # jobs' recent pace, and none while its slots run long jobs. 0: claim only for free
    # slots. runworker --prefetch.
    "WORKER_PREFETCH": 64,
    # Database connections a worker's slot threads hold at once, per database, when its
    # concurrency is larger: a slot opens one only with a permit (waiting for one meanwhile)
    # and closes it after each job. 0 or None: no bound, each slot thread keeps its own
    # connection open. The worker's own threads hold 4 more (5 with LISTEN on PostgreSQL).
    # runworker --max-connections.
    "MAX_DB_CONNECTIONS": 10,
    # The speed work of asyncjobs.db (model instances filled in directly, values prepared
    # without the ORM's per-field calls, psycopg's own cursors, COPY): False runs the same
    # operations through the ORM and Django's cursors, storing the same rows.
    "FAST_PATH": True,
    # PostgreSQL: a claim (queued -> running and its attempt row) commits without waiting for
    # its WAL flush (synchronous_commit off for that transaction only). A claim lost in a
    # database crash only means the job runs again, as when a worker dies; the enqueue and the
    # outcome stay durable. True: claims wait for the flush too.
    "DURABLE_CLAIMS": False,
    # Tests: run each job in-process as soon as the transaction that enqueued it commits
    # (see asyncjobs.testing). Never in production.
    "RUN_INLINE": False,
    # Cron schedules: name -> {"task": dotted path, "cron": expression (5 fields, or 6 with
    # seconds last), "args": [], "kwargs": {}, "timezone": "UTC", "queue": None (the task's),
    # "priority": None, "misfire": "run_once" | "skip"}. Each tick is enqueued exactly once.
    "SCHEDULES": {},
    # With misfire "skip", a tick later than this is skipped (downtime) instead of run.
    "SCHEDULE_GRACE": timedelta(seconds=60),
    # Retention: finished jobs older than this (by finished_at) are deleted by the workers'
    # maintenance, in batches; None keeps them. Also `manage.py prunejobs`.
    "RETENTION": {
        "succeeded": timedelta(days=7),
        "cancelled": timedelta(days=7),
        "failed": timedelta(days=30),
    },
    "PRUNE_BATCH_SIZE": 500,
    # Outbound HTTP (callback jobs and webhooks).
    # Regular expressions a URL must match (re.match) to be called; empty: none is allowed.
    "OUTBOUND_ALLOWED_URLS": (),
    # Networks (CIDR) that may be called although they are loopback, private, link-local or
    # otherwise not public, e.g. ("127.0.0.0/8",) for a local test server.
    "OUTBOUND_ALLOWED_NETWORKS": (),
    # One deadline for each call as a whole: DNS, connect, TLS, request, response headers and
    # body, and redirects.
    "OUTBOUND_TIMEOUT": timedelta(seconds=10),
    "OUTBOUND_MAX_REDIRECTS": 5,
    # Bytes of a response body read at most; the rest is never read (the connection closes).
    "OUTBOUND_MAX_RESPONSE_BYTES": 64 * 1024,
    # How much of a callback's response body is stored on the job (characters).
    "CALLBACK_RESPONSE_LIMIT": 4096,
    # Webhooks on completion: the HMAC-SHA256 key (required to use webhooks; a list of keys
    # while rotating: the first signs), delivery retries, the queue deliveries go to (None:
    # the finished job's queue).
    "WEBHOOK_SECRET": None,
    "WEBHOOK_MAX_ATTEMPTS": 5,
    "WEBHOOK_QUEUE": None,
    # The client API: how long a status token stays valid; permission classes (dotted paths)
    # for reading a job, a batch, for list and stats, and for creating callback jobs.
    "STATUS_TOKEN_MAX_AGE": timedelta(days=1),
    "API_READ_PERMISSION_CLASSES": ("asyncjobs.api.permissions.CanReadJob",),
    "API_BATCH_READ_PERMISSION_CLASSES": ("asyncjobs.api.permissions.CanReadBatch",),
    "API_ADMIN_PERMISSION_CLASSES": ("asyncjobs.api.permissions.CanViewJobs",),
    "API_CREATE_PERMISSION_CLASSES": ("asyncjobs.api.permissions.CanCreateJob",),
    "API_EVENTS_MAX_DURATION": timedelta(minutes=5),
    # Rate limits per caller (user, else client address), in DRF's "N/s|min|hour|day":
    # "create" for POST /jobs/, "events" for opening event streams. None turns one off.
    "API_THROTTLE_RATES": {"create": "60/min", "events": "60/min"},
    # Event streams one caller may hold open at once (429 beyond); None: no cap.
    "API_EVENTS_MAX_STREAMS": 5,
    # Request bodies: larger ones get 413 before they are read; deeper JSON gets 400.
    "API_MAX_BODY_SIZE": 256 * 1024,
    "API_MAX_JSON_DEPTH": 32,
    # Bearer token a Prometheus scraper sends to asyncjobs.metrics.metrics_view (staff users
    # need none). None: only staff.
    "METRICS_TOKEN": None,
}

DURATION_KEYS = frozenset(
    {
        "TIMEOUT",
        "LEASE_DURATION",
        "HEARTBEAT_INTERVAL",
        "POLL_INTERVAL",
        "SHUTDOWN_TIMEOUT",
        "MAINTENANCE_INTERVAL",
        "WORKER_RETENTION",
        "OUTBOUND_TIMEOUT",
        "STATUS_TOKEN_MAX_AGE",
        "API_EVENTS_MAX_DURATION",
        "IDEMPOTENCY_KEY_TTL",
        "SCHEDULE_GRACE",
    }
)
QUEUE_OPTION_KEYS = frozenset(
    {
        "MAX_ATTEMPTS",
        "BACKOFF",
        "TIMEOUT",
        "RETRY_ON",
        "FAIL_ON",
        "MAX_QUEUED",
        "RATE_LIMIT",
        "CONCURRENCY",
    }
)


def as_timedelta(value: timedelta | float | None) -> timedelta | None:
    """Return ``value`` as a ``timedelta``; numbers are seconds, ``None`` stays ``None``."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Expected a timedelta or a number of seconds, got {value!r}.")
    return timedelta(seconds=value)


class JobsSettings:
    """Attribute access to ``settings.ASYNCJOBS`` with defaults; durations as ``timedelta``.

    A value read once is kept as an attribute of the instance, so that later reads (several
    on every enqueue) are plain attribute reads, without ``__getattr__``; so is each queue's
    option (``queue_option``). ``reload`` forgets them all."""

    def __init__(self) -> None:
        self._queue_options: dict[tuple[str, str], Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        """The project's ``ASYNCJOBS`` dict (empty when unset)."""
        return getattr(settings, "ASYNCJOBS", None) or {}

    def __getattr__(self, name: str) -> Any:
        # (Called only for a name that is not an attribute yet: each setting once.)
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid asyncjobs setting: {name!r}")
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in DURATION_KEYS:
            value = as_timedelta(value)
        self.__dict__[name] = value
        return value

    def queue_option(self, queue_name: str, key: str) -> Any:
        """The value of ``key`` for ``queue_name``: the queue's override, else the global one."""
        try:
            return self._queue_options[queue_name, key]
        except KeyError:
            pass
        overrides = self.QUEUES.get(queue_name) or {}
        if key in overrides:
            value = overrides[key]
            value = as_timedelta(value) if key in DURATION_KEYS else value
        else:
            value = getattr(self, key)
        if len(self._queue_options) >= 1024:  # (queue names are few; bounded all the same)
            self._queue_options = {}
        self._queue_options[queue_name, key] = value
        return value

    def reload(self) -> None:
        """Forget cached values (called when the setting changes)."""
        for name in [name for name in self.__dict__ if name in DEFAULTS]:
            del self.__dict__[name]
        self._queue_options = {}


jobs_settings = JobsSettings()


@receiver(setting_changed)
def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "ASYNCJOBS":
        jobs_settings.reload()


RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_parts(value: str | None) -> tuple[int, timedelta] | None:
    """The count and the period of a rate like ``"10/s"``, ``"100/m"``, ``"5/h"`` or
    ``"3/10s"``: ``(3, timedelta(seconds=10))`` for the last (None for None). Raises
    ``ValueError`` for anything else."""
    if value is None:
        return None
    import re

    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh])\s*", str(value))
    if not match or int(match[1]) < 1:
        raise ValueError(f"Invalid rate {value!r}: use N/s, N/m, N/h or N/<number><unit>.")
    span = float(match[2] or 1) * RATE_UNITS[match[3]]
    if span <= 0:
        raise ValueError(f"Invalid rate {value!r}: the period must be positive.")
    return int(match[1]), timedelta(seconds=span)


def parse_rate(value: str | None) -> timedelta | None:
    """The interval between starts for a rate like ``"10/s"``, ``"100/m"``, ``"5/h"`` or
    ``"3/10s"`` (None for None): the period divided by the count. Raises ``ValueError`` for
    anything else."""
    parts = rate_parts(value)
    if parts is None:
        return None
    count, period = parts
    return timedelta(seconds=period.total_seconds() / count)
