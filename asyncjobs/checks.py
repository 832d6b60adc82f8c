"""System checks: misconfiguration is reported by ``manage.py check`` (and at runserver or
runworker start), not discovered when the first job fails."""

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.urls import URLResolver, get_resolver
from django.utils.module_loading import import_string

from asyncjobs import db, services
from asyncjobs.conf import DEFAULTS, QUEUE_OPTION_KEYS, jobs_settings, parse_rate
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.schedules import load_schedules


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The ``ASYNCJOBS`` dict: known keys, valid values."""
    errors: list[checks.CheckMessage] = []
    user = getattr(settings, "ASYNCJOBS", None) or {}
    if not isinstance(user, dict):
        return [checks.Error("ASYNCJOBS must be a dict.", id="asyncjobs.E001")]
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(
            checks.Error(
                f"Unknown ASYNCJOBS setting {key!r}.",
                hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
                id="asyncjobs.E002",
            )
        )
    queues = user.get("QUEUES", {})
    if not isinstance(queues, dict):
        return [*errors, checks.Error("ASYNCJOBS['QUEUES'] must be a dict.", id="asyncjobs.E003")]
    for queue_name, overrides in queues.items():
        unknown = set(overrides or {}) - QUEUE_OPTION_KEYS
        if unknown:
            errors.append(
                checks.Error(
                    f"ASYNCJOBS['QUEUES'][{queue_name!r}] has unknown keys {sorted(unknown)}.",
                    hint=f"Per-queue keys: {', '.join(sorted(QUEUE_OPTION_KEYS))}.",
                    id="asyncjobs.E004",
                )
            )
    for queue_name, overrides in queues.items():
        try:
            parse_rate((overrides or {}).get("RATE_LIMIT"))
            concurrency = (overrides or {}).get("CONCURRENCY")
            if concurrency is not None and (
                isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
            ):
                raise ValueError(f"CONCURRENCY must be an integer >= 1, got {concurrency!r}")
            limit = (overrides or {}).get("MAX_QUEUED")
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise ValueError(f"MAX_QUEUED must be an integer >= 1, got {limit!r}")
        except ValueError as exc:
            errors.append(
                checks.Error(f"ASYNCJOBS['QUEUES'][{queue_name!r}]: {exc}", id="asyncjobs.E008")
            )
    for queue_name in ["default", *queues]:
        try:
            services.resolve_options(queue_name)
        except (ConfigurationError, TypeError, ValueError) as exc:
            errors.append(
                checks.Error(
                    f"Invalid asyncjobs retry settings for queue {queue_name!r}: {exc}",
                    id="asyncjobs.E005",
                )
            )
    for key, minimum, optional in (
        ("WORKER_PREFETCH", 0, False),
        ("WORKER_MAX_MEMORY", 1, True),
        ("MAX_ARGUMENTS_BYTES", 1, True),
        ("MAX_RESULT_BYTES", 1, True),
        ("MAX_DISPLAY_BYTES", 1, True),
    ):
        value = getattr(jobs_settings, key)
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            errors.append(
                checks.Error(
                    f"ASYNCJOBS[{key!r}] must be an integer >= {minimum}"
                    f"{' or None' if optional else ''}, got {value!r}.",
                    id="asyncjobs.E009",
                )
            )
    if jobs_settings.POOL_MODE not in (None, "session", "transaction"):
        errors.append(
            checks.Error(
                f"ASYNCJOBS['POOL_MODE'] must be None, 'session' or 'transaction', "
                f"got {jobs_settings.POOL_MODE!r}.",
                id="asyncjobs.E013",
            )
        )
    listen = jobs_settings.LISTEN_DATABASE
    if listen is not None and listen not in settings.DATABASES:
        errors.append(
            checks.Error(
                f"ASYNCJOBS['LISTEN_DATABASE'] names {listen!r}, which is not in DATABASES.",
                id="asyncjobs.E013",
            )
        )
    try:
        load_schedules()
    except ConfigurationError as exc:
        errors.append(checks.Error(str(exc), id="asyncjobs.E007"))
    try:
        intervals_ok = jobs_settings.HEARTBEAT_INTERVAL * 2 <= jobs_settings.LEASE_DURATION
    except TypeError as exc:
        errors.append(checks.Error(f"Invalid asyncjobs duration: {exc}", id="asyncjobs.E006"))
    else:
        if not intervals_ok:
            errors.append(
                checks.Warning(
                    "ASYNCJOBS LEASE_DURATION should be at least twice HEARTBEAT_INTERVAL.",
                    hint="Otherwise a busy but healthy worker can lose its jobs to a rescue.",
                    id="asyncjobs.W001",
                )
            )
    return errors


def check_backend(backend: Any) -> list[checks.CheckMessage]:
    """Checks for one ``JobsBackend`` (called through ``django.tasks``' own check)."""
    errors: list[checks.CheckMessage] = []
    if not apps.is_installed("asyncjobs"):
        errors.append(
            checks.Error(
                f"TASKS[{backend.alias!r}] uses asyncjobs but 'asyncjobs' is not in "
                "INSTALLED_APPS.",
                id="asyncjobs.E010",
            )
        )
    if backend.database not in settings.DATABASES:
        errors.append(
            checks.Error(
                f"TASKS[{backend.alias!r}]['OPTIONS']['DATABASE'] is {backend.database!r}, "
                "which is not in DATABASES.",
                id="asyncjobs.E011",
            )
        )
        return errors
    if not db.vendor_supported(backend.database):
        errors.append(
            checks.Error(
                f"asyncjobs supports PostgreSQL, MariaDB/MySQL and SQLite, not "
                f"{db.vendor_name(backend.database)}.",
                id="asyncjobs.E012",
            )
        )
    elif db.is_sqlite_without_immediate(backend.database):
        errors.append(
            checks.Warning(
                f"Database {backend.database!r} is SQLite without "
                "OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
                hint="Workers and web requests then fail with 'database is locked' under "
                "load. Set it, with a 'timeout', in DATABASES.",
                id="asyncjobs.W010",
            )
        )
    elif (level := db.mysql_isolation_level(backend.database)) not in (None, "read committed"):
        errors.append(
            checks.Warning(
                f"Database {backend.database!r} is MariaDB/MySQL with the isolation level "
                f"{level!r}.",
                hint="Claims lock rows with SELECT ... FOR UPDATE SKIP LOCKED; above READ "
                "COMMITTED that also takes gap locks, which block enqueues and deadlock "
                "workers. Set OPTIONS['isolation_level'] = 'read committed' (Django's "
                "default) in DATABASES.",
                id="asyncjobs.W012",
            )
        )
    unknown = set(jobs_settings.QUEUES) - set(backend.queues)
    if backend.queues and unknown:
        errors.append(
            checks.Warning(
                f"ASYNCJOBS['QUEUES'] configures {sorted(unknown)}, which TASKS"
                f"[{backend.alias!r}]['QUEUES'] does not list.",
                id="asyncjobs.W011",
            )
        )
    return errors


API_RATE = r"[1-9][0-9]*/[smhd][a-z]*"  # DRF's "N/period": only the period's first letter counts


@checks.register(checks.Tags.compatibility)
def check_api_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``API_THROTTLE_RATES`` and ``API_EVENTS_MAX_STREAMS``: a bad value would otherwise
    fail the first request it limits."""
    import re

    errors: list[checks.CheckMessage] = []
    user = getattr(settings, "ASYNCJOBS", None) or {}
    if not isinstance(user, dict):
        return errors
    rates = user.get("API_THROTTLE_RATES", DEFAULTS["API_THROTTLE_RATES"])
    known = set(DEFAULTS["API_THROTTLE_RATES"])
    if rates is not None and not isinstance(rates, dict):
        rates = {"(the setting)": rates}
    for name, rate in (rates or {}).items():
        if name not in known or not (rate is None or re.fullmatch(API_RATE, str(rate))):
            errors.append(
                checks.Error(
                    f"ASYNCJOBS['API_THROTTLE_RATES'][{name!r}] = {rate!r} is not a rate.",
                    hint=f"A dict with keys {sorted(known)}, each a rate like '60/min', "
                    "'10/s', '1000/day', or None for no limit; or None for no limits.",
                    id="asyncjobs.E030",
                )
            )
    streams = user.get("API_EVENTS_MAX_STREAMS", DEFAULTS["API_EVENTS_MAX_STREAMS"])
    if streams is not None and (
        isinstance(streams, bool) or not isinstance(streams, int) or streams < 1
    ):
        errors.append(
            checks.Error(
                f"ASYNCJOBS['API_EVENTS_MAX_STREAMS'] = {streams!r} is not a number of streams.",
                hint="A whole number >= 1, or None for no cap.",
                id="asyncjobs.E031",
            )
        )
    return errors


ENQUEUED_BY_MIDDLEWARE = "asyncjobs.middleware.EnqueuedByMiddleware"
AUTHENTICATION_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def _routes_job_api(patterns: Any) -> bool:
    """Whether a URL pattern list, searched through its includes, routes a view of the
    job API (``asyncjobs.api``)."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if _routes_job_api(pattern.url_patterns):
                return True
            continue
        view = getattr(pattern.callback, "view_class", None) or pattern.callback
        if str(getattr(view, "__module__", "")).startswith("asyncjobs.api."):
            return True
    return False


def _middleware_position(path: str) -> int | None:
    """The index in ``MIDDLEWARE`` of ``path`` or of a subclass of it, or None."""
    try:
        wanted = import_string(path)
    except ImportError:
        wanted = None
    for index, entry in enumerate(getattr(settings, "MIDDLEWARE", None) or ()):
        if entry == path:
            return index
        try:
            cls = import_string(entry)
        except ImportError:
            continue  # Django reports a middleware that does not import
        if wanted is not None and isinstance(cls, type) and issubclass(cls, wanted):
            return index
    return None


@checks.register(checks.Tags.urls)
def check_api_wiring(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """When the project routes the job API, ``EnqueuedByMiddleware`` must run, after
    ``AuthenticationMiddleware``: without it a job enqueued in a request has no owner, and
    the user who enqueued it gets a bare 404 from ``GET /jobs/<id>/``."""
    try:
        routed = _routes_job_api(get_resolver().url_patterns)
    except Exception:  # a broken URLconf is reported by Django's own check
        return []
    if not routed:
        return []
    ours = _middleware_position(ENQUEUED_BY_MIDDLEWARE)
    if ours is None:
        return [
            checks.Warning(
                f"The job API is routed, but {ENQUEUED_BY_MIDDLEWARE} is not in MIDDLEWARE.",
                hint="Without it a job enqueued in a request has no owner, and that user gets "
                "404 from GET /jobs/<id>/ (only staff and status-token holders can read it). "
                f"Add it after {AUTHENTICATION_MIDDLEWARE!r}.",
                id="asyncjobs.W030",
            )
        ]
    authentication = _middleware_position(AUTHENTICATION_MIDDLEWARE)
    if authentication is None or authentication > ours:
        return [
            checks.Warning(
                f"{ENQUEUED_BY_MIDDLEWARE} runs before {AUTHENTICATION_MIDDLEWARE} "
                "(or without it), so it never sees the request's user.",
                hint=f"Move it after {AUTHENTICATION_MIDDLEWARE!r} in MIDDLEWARE.",
                id="asyncjobs.W031",
            )
        ]
    return []
