"""The operations on jobs: one code path each, shared by the backend, the worker, the admin
and the API.

Every function that needs the time takes a keyword-only ``now``; only the edges (the backend,
the worker loop, views) read the clock. Every state change is a conditional UPDATE on the
status the change starts from, so concurrent workers, rescues and operators cannot step on
each other: the loser's UPDATE matches no row.
"""

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import socket
import time
import traceback as tb
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, DateTimeField, F, Min, OuterRef, Q, Subquery, Value, When
from django.db.models.base import ModelState
from django.db.models.functions import Coalesce
from django.db.models.signals import post_init, pre_init
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.module_loading import import_string

from asyncjobs import db, monitoring, outbound, retry
from asyncjobs.conf import as_timedelta, jobs_settings, rate_parts
from asyncjobs.exceptions import (
    ArgumentsTooLargeError,
    ConfigurationError,
    InvalidArgumentsError,
    InvalidTransitionError,
    JobNotFoundError,
    JobTimeoutError,
    QueueFullError,
    ResultTooLargeError,
    Retry,
    TaskImportError,
    UnknownQueueError,
    WorkerLostError,
    WorkerShutdownError,
)
from asyncjobs.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    WAITING_STATUSES,
    Attempt,
    AttemptOutcome,
    Job,
    JobStatus,
    LimitState,
    QueueState,
    Worker,
    WorkerStatus,
)
from asyncjobs.tasks_api import normalize_json
from asyncjobs.text import safe_text

logger = logging.getLogger(__name__)

# Error text is bounded so one runaway exception cannot bloat the table.
MAX_ERROR_MESSAGE = 2_000
MAX_TRACEBACK = 20_000


@dataclass(frozen=True, slots=True)
class JobOptions:
    """The retry policy a job is enqueued with, fully resolved."""

    max_attempts: int
    backoff: retry.Backoff
    retry_on: tuple[str, ...]
    fail_on: tuple[str, ...]
    timeout: timedelta | None


def class_path(cls: type) -> str:
    """The dotted import path of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_paths(value: Iterable[type[BaseException] | str], name: str) -> tuple[str, ...]:
    paths = []
    for item in value:
        if isinstance(item, str):
            paths.append(item)
        elif isinstance(item, type) and issubclass(item, BaseException):
            paths.append(class_path(item))
        else:
            raise ConfigurationError(f"{name} must list exception classes, got {item!r}.")
    return tuple(paths)


def resolve_options(
    queue_name: str,
    *,
    max_attempts: int | None = None,
    backoff: Any = None,
    retry_on: Iterable[type[BaseException] | str] | None = None,
    fail_on: Iterable[type[BaseException] | str] | None = None,
    timeout: timedelta | float | None = None,
) -> JobOptions:
    """Resolve a task's options: the task's own value, else its queue's, else the global one.

    Raises ``ConfigurationError`` for values that cannot work.
    """

    def pick(value: Any, key: str) -> Any:
        return value if value is not None else jobs_settings.queue_option(queue_name, key)

    attempts = pick(max_attempts, "MAX_ATTEMPTS")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigurationError(f"max_attempts must be an integer >= 1, got {attempts!r}.")
    resolved_timeout = as_timedelta(pick(timeout, "TIMEOUT"))
    if resolved_timeout is not None and resolved_timeout <= timedelta(0):
        raise ConfigurationError("timeout must be positive.")
    return JobOptions(
        max_attempts=attempts,
        backoff=retry.as_backoff(pick(backoff, "BACKOFF")),
        retry_on=_exception_paths(pick(retry_on, "RETRY_ON"), "retry_on"),
        fail_on=_exception_paths(pick(fail_on, "FAIL_ON"), "fail_on"),
        timeout=resolved_timeout,
    )


# json.dumps(allow_nan=False) builds an encoder per call; this one is built once.
_STRICT_JSON = json.JSONEncoder(allow_nan=False)


# A flat value's integers beyond this take the general path, so that each of its scalars but
# the strings has a short JSON text: at most 24 characters (-2.2250738585072014e-308).
_FLAT_INT_MAX = 2**64
_FLAT_INT_MIN = -(2**64)


def _flat_copy(value: Any) -> tuple[list[Any] | dict[str, Any], int] | None:
    """A copy of ``value`` if it is what task arguments mostly are, a flat list (or tuple)
    of scalars or a flat dict of them with text keys, and those scalars can be stored: no
    NaN or infinity, no integer beyond 2**64 (20 digits). ``None`` for anything else, which
    takes the general path (which also raises the errors).

    With the copy, an upper bound of the length of its JSON text, from the length of its
    strings: a character takes at most 12 bytes of JSON (outside the Basic Multilingual
    Plane, a surrogate pair of \\u escapes), any other scalar at most 24; with quotes, a
    key's ": " and the ", " between items, an item takes at most 8 more.
    """
    kind = type(value)
    chars = 0  # of the strings, keys included: the only scalars of unbounded length
    if kind is list or kind is tuple:
        items = value
    elif kind is dict:
        for key in value:
            if type(key) is not str:
                return None
            chars += len(key)
        items = value.values()
    else:
        return None
    for item in items:
        item_kind = type(item)
        if item_kind is str:
            chars += len(item)
        elif item_kind is int:
            if item > _FLAT_INT_MAX or item < _FLAT_INT_MIN:  # (two tests: the quickest)
                return None
        elif item_kind is float:
            if not math.isfinite(item):
                return None
        elif item_kind not in db.JSON_SCALARS:
            return None
    copy = dict(value) if kind is dict else list(value)
    return copy, 2 + 32 * len(copy) + 12 * chars


def storable_json_sized(value: Any) -> tuple[Any, int]:
    """``storable_json(value)`` and an upper bound of the length of its JSON text
    (``_STORED_JSON``), worked out from what checking it costs already: a flat value's
    strings are counted (``_flat_copy``), any other value is encoded anyway (then the bound
    is exact). ``json_size`` gives the exact size when the bound is over a limit."""
    flat = _flat_copy(value)
    if flat is not None:  # checked without encoding it
        return flat
    normalized = normalize_json(value)
    text = _STRICT_JSON.encode(normalized)  # (raises for NaN and infinities)
    return normalized, len(text)


def storable_json(value: Any) -> Any:
    """``value`` normalised to JSON types that every supported database stores as given.

    Raises ``TypeError`` or ``ValueError`` for what is not JSON, and for NaN and infinities
    (not JSON; PostgreSQL's jsonb refuses them), on every database alike. Strings may hold
    any character, NUL and unpaired surrogates included (see ``StoredJSONField``).
    """
    return storable_json_sized(value)[0]


def _json_or_error(value: Any, what: str) -> tuple[Any, int]:
    """``value`` normalised to JSON types, with a bound of its JSON's length
    (``storable_json_sized``); ``InvalidArgumentsError`` if it cannot be."""
    try:
        return storable_json_sized(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentsError(f"{what} must be JSON-serializable: {exc}") from exc


# --- Size limits ----------------------------------------------------------------------------

# The JSON text of a value as a JSONField stores it (json.dumps's defaults: ", " and ": "
# separators, non-ASCII characters escaped, so one character is one byte). _STRICT_JSON
# writes the same text for what it accepts.
_STORED_JSON = json.JSONEncoder()


def json_size(value: Any) -> int:
    """The size in bytes of ``value``'s JSON text as a JSONField stores it."""
    return len(_STORED_JSON.encode(value))


def check_result_size(value: Any, bound: int, task_path: str) -> None:
    """Raise ``ResultTooLargeError`` if the JSON of a task's return value (as returned by
    ``storable_json_sized`` with ``bound``) is larger than ``MAX_RESULT_BYTES``."""
    limit = jobs_settings.MAX_RESULT_BYTES
    if limit is None or bound <= limit:
        return
    size = json_size(value)
    if size > limit:
        raise ResultTooLargeError(
            f"Task {task_path} returned {size:,} bytes of JSON; MAX_RESULT_BYTES is {limit:,}.",
            size,
            limit,
        )


def json_excerpt(value: Any, limit: int | None, *, indent: int | None = None) -> str | None:
    """None if ``value``'s JSON (as stored) is at most ``limit`` bytes, else the first
    ``limit`` characters of its JSON text (ASCII) indented by ``indent`` as ``json.dumps``
    would: a large value as the admin and the API show it.

    Small flat values are not encoded at all, and a large value is encoded only as far as
    the excerpt goes. Any JSON value read back from the database is accepted.
    """
    if limit is None:
        return None
    flat = _flat_copy(value)
    if (flat is not None and flat[1] <= limit) or json_size(value) <= limit:
        return None
    pieces, length = [], 0
    for piece in json.JSONEncoder(indent=indent).iterencode(value):
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            break
    return "".join(pieces)[:limit]


_enqueued_by: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "asyncjobs_enqueued_by", default=None
)


@contextlib.contextmanager
def enqueued_by(user: Any) -> Iterator[None]:
    """Record ``user`` as the owner of the jobs enqueued inside the block.

    The owner may read the job through the API. ``EnqueuedByMiddleware`` does this for
    every request of an authenticated user.
    """
    # Kept as given (request.user is lazy): it is only evaluated if a job is enqueued.
    token = _enqueued_by.set(user)
    try:
        yield
    finally:
        _enqueued_by.reset(token)


def call_key(task_path: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """The unique key of a task call: the task and a hash of its JSON arguments."""
    payload = json.dumps(
        [list(args), kwargs], sort_keys=True, separators=(",", ":"), default=str
    ).encode()
    return f"call:{hashlib.sha256(task_path.encode() + b'|' + payload).hexdigest()}"


def build_job(
    *,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    unique_key: str | None = None,
    **fields: Any,
) -> Job:
    """An unsaved Job for one task call (``fields`` as for ``job_maker``). Raises
    ``InvalidArgumentsError`` for non-JSON arguments and ``OutboundURLRefusedError`` for a
    webhook URL that may not be called."""
    return job_maker(**fields)(args, kwargs, unique_key)


JobMaker = Callable[[Sequence[Any], dict[str, Any], "str | None"], Job]


def job_maker(
    *,
    task_path: str,
    queue_name: str,
    priority: int,
    run_after: datetime | None,
    backend: str,
    options: JobOptions,
    now: datetime,
    webhook_url: str = "",
    unique_for: timedelta | None = None,
    limit_key: str = "",
    limit_concurrency: int | None = None,
    limit_rate: str = "",
    task_overrides: dict[str, Any] | None = None,
) -> JobMaker:
    """What builds unsaved Jobs for calls of one task at ``now``, from a call's arguments
    and unique key: what those jobs share is validated and worked out here, once.

    The jobs' fields are filled in directly from a copy of that shared state. Django's
    model init would set every field and send ``pre_init``/``post_init``; if a project
    connects a receiver for Job to one of those, the model's own init runs instead,
    positionally (itself several times faster than by keyword). Raises
    ``OutboundURLRefusedError`` for a webhook URL that may not be called."""
    due = run_after if run_after is not None else now
    if webhook_url:
        outbound._secret()  # fail at enqueue, not at delivery, if no secret is configured
        outbound.validate_url(webhook_url)
    owner = _enqueued_by.get()
    if owner is not None and not getattr(owner, "is_authenticated", False):
        owner = None
    shared = {
        "backend": backend,
        "task_path": task_path,
        "queue_name": queue_name,
        "priority": priority,
        "status": JobStatus.SCHEDULED if due > now else JobStatus.QUEUED,
        "enqueued_at": now,
        "run_after": due,
        **_policy_fields(options),
        "webhook_url": webhook_url,
        "limit_key": limit_key,
        "limit_concurrency": limit_concurrency if limit_key else None,
        "limit_rate": limit_rate if limit_key else "",
        "enqueued_by_id": owner.pk if owner is not None else None,
        "task_overrides": task_overrides,
    }
    max_arguments = jobs_settings.MAX_ARGUMENTS_BYTES
    through_init = pre_init.has_listeners(Job) or post_init.has_listeners(Job)
    defaults, factories = _job_defaults()
    # In field order (update() keeps it); for a job filled in directly, after its _state,
    # as the model's init sets them.
    template = dict(defaults) if through_init else {"_state": None, **defaults}
    template.update(shared)
    # Defaults made per job (the id), except for the arguments, which every call gives.
    factories = tuple(
        (attname, factory)
        for attname, factory in factories
        if attname not in shared and attname not in ("args", "kwargs")
    )

    def make(args: Sequence[Any], kwargs: dict[str, Any], unique_key: str | None = None) -> Job:
        state = template.copy()
        for attname, factory in factories:
            state[attname] = factory()
        # (storable_json returns a new list or dict: copy only what it could not take)
        if type(args) is not list and type(args) is not tuple:
            args = list(args)
        state["args"], args_bound = _json_or_error(args, "Task arguments")
        state["kwargs"], kwargs_bound = _json_or_error(
            kwargs if type(kwargs) is dict else dict(kwargs), "Task keyword arguments"
        )
        if max_arguments is not None and args_bound + kwargs_bound > max_arguments:
            size = json_size(state["args"]) + json_size(state["kwargs"])
            if size > max_arguments:
                raise ArgumentsTooLargeError(size, max_arguments)
        if unique_key is not None:
            state["unique_key"] = unique_key
            state["unique_for"] = unique_for
        if through_init:
            job = Job(*state.values())  # type: ignore[misc]
        else:
            state["_state"] = ModelState()
            job = Job.__new__(Job)
            job.__dict__ = state
        if owner is not None:
            job.enqueued_by = owner
        return job

    return make


IDENTITY_CACHE_SIZE = 1024


def by_identity(
    cache: dict[Any, tuple[Any, Any]], obj: Any, compute: Any, scope: Any = None
) -> Any:
    """``compute()``, remembered in ``cache`` for this very object (and ``scope``); the
    object is kept with the value, so its id cannot be reused meanwhile. A full cache is
    emptied."""
    key = (scope, id(obj))
    hit = cache.get(key)
    if hit is not None and hit[0] is obj:
        return hit[1]
    value = compute()
    if len(cache) >= IDENTITY_CACHE_SIZE:
        cache.clear()
    cache[key] = (obj, value)
    return value


_POLICY_FIELDS: dict[Any, tuple[Any, Any]] = {}


def _policy_fields(options: JobOptions) -> dict[str, Any]:
    """The job fields of a retry policy. The same options (one task's, remembered by the
    backend) give the same objects, so that a batch of jobs shares them: stored once per
    batch by ``COPY``, not once per job. Nothing modifies them in place."""
    return by_identity(
        _POLICY_FIELDS,
        options,
        lambda: {
            "max_attempts": options.max_attempts,
            "backoff": options.backoff.to_json(),
            "retry_on": list(options.retry_on),
            "fail_on": list(options.fail_on),
            "timeout": options.timeout,
        },
    )


@functools.cache
def _job_defaults() -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """Per concrete field of ``Job``, in order, its default by attname; and the fields whose
    default is a callable to call for each job, with that callable (``uuid4`` for the id,
    made the quick way)."""
    fields = Job._meta.concrete_fields
    return (
        {f.attname: None if callable(f.default) else f.get_default() for f in fields},
        tuple(
            (f.attname, uuid4 if f.default is uuid.uuid4 else f.default)
            for f in fields
            if f.has_default() and callable(f.default)
        ),
    )


# A version 4 UUID: 122 random bits, the version (4) and the RFC 4122 variant (10) set.
_UUID4_RANDOM = ((1 << 128) - 1) & ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_FIXED = (4 << 76) | (0x8000 << 48)


def _uuid4_direct() -> uuid.UUID:
    value = object.__new__(uuid.UUID)
    object.__setattr__(value, "int", int.from_bytes(os.urandom(16)) & _UUID4_RANDOM | _UUID4_FIXED)
    object.__setattr__(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def _direct_uuid_works() -> bool:
    try:
        made = _uuid4_direct()
        same = uuid.UUID(str(made))
        return made == same and hash(made) == hash(same) and same.version == 4
    except (AttributeError, TypeError, ValueError):
        return False


# ``uuid.uuid4()``, with the same random bits from ``os.urandom``, set on the UUID directly
# (as Python 3.14's own ``uuid4`` does, CPython gh-128150) rather than through
# ``UUID.__init__``, whose checks cost half of a uuid4 call on Python 3.12 and a sixth of a
# bulk enqueue's time per job. If a Python's UUID is laid out otherwise, the standard one.
uuid4: Callable[[], uuid.UUID] = _uuid4_direct if _direct_uuid_works() else uuid.uuid4


def enqueue_jobs(
    jobs: Iterable[Job],
    *,
    using: str,
    now: datetime | None = None,
    queues: Collection[str] | None = None,
) -> list[Job]:
    """Store built jobs, all or none, in the caller's transaction if there is one.

    Inside ``transaction.atomic()`` the jobs stay invisible to workers until commit and vanish
    on rollback; on PostgreSQL workers are notified when the transaction commits.

    ``jobs`` may be built lazily, while the first ones are being written (a generator): then
    ``queues`` must name every queue they go to, since a capped queue is locked before the
    first job is stored; a job for another queue raises ``ValueError``. An exception raised
    by the generator rolls back what was written.

    A job with a ``unique_key`` whose key is held by another job is not stored: that job is
    returned in its place (so is the first of several calls in ``jobs`` sharing a key).
    Returns the stored or existing job for each input, in order; ``result is job`` tells
    which. Raises ``QueueFullError``, storing nothing, if a queue with ``MAX_QUEUED`` would
    hold more waiting jobs than that.
    """
    now = now or timezone.now()
    if queues is None:
        jobs = list(jobs)
        queues = {job.queue_name for job in jobs}
    capped = {
        name: limit
        for name in queues
        if (limit := jobs_settings.queue_option(name, "MAX_QUEUED")) is not None
    }
    if isinstance(jobs, list) and len(jobs) == 1 and not capped and jobs[0].unique_key is None:
        db.insert_jobs(using, jobs)  # autocommit: one statement, one commit
        return jobs
    given: list[Job] = []

    def plain() -> Iterator[Job]:  # the jobs without a unique key; keeps all in ``given``
        for job in jobs:
            if job.queue_name not in queues:
                raise ValueError(f"A job for queue {job.queue_name!r}, not in {sorted(queues)}.")
            given.append(job)
            if job.unique_key is None:
                yield job

    with transaction.atomic(using=using):
        # Capped queues: take the queue's row lock first, so that concurrent enqueues count
        # one after the other and the limit holds exactly.
        for name in sorted(capped):
            QueueState.objects.using(using).get_or_create(name=name, defaults={"changed_at": now})
            QueueState.objects.using(using).select_for_update().get(name=name)
        db.insert_jobs(using, plain())
        stored = [
            job if job.unique_key is None else _insert_unique(job, now, using) for job in given
        ]
        for name, limit in capped.items():
            waiting = (
                Job.objects.using(using)
                .filter(queue_name=name, status__in=WAITING_STATUSES)
                .count()
            )
            if waiting > limit:
                raise QueueFullError(name, limit)
    return stored


def _key_expired(job: Job, now: datetime) -> bool:
    """Whether ``job`` holds its unique key only because nobody released it yet."""
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return True
    return bool(
        job.status == JobStatus.SUCCEEDED
        and (
            job.unique_for is None or (job.finished_at and job.finished_at + job.unique_for <= now)
        )
    )


def _insert_unique(job: Job, now: datetime, using: str) -> Job:
    """Insert ``job`` or return the job holding its key; the unique constraint decides."""
    for _ in range(3):
        try:
            with transaction.atomic(using=using):
                db.insert_jobs(using, [job])
            return job
        except IntegrityError:
            existing = Job.objects.using(using).filter(unique_key=job.unique_key).first()
            if existing is None:
                continue  # released in between: try again
            if not _key_expired(existing, now):
                return existing
            Job.objects.using(using).filter(pk=existing.pk, unique_key=job.unique_key).update(
                unique_key=None
            )
    raise InvalidTransitionError(f"Could not settle unique key {job.unique_key!r}.")


def enqueue_unique(job: Job, *, using: str, now: datetime | None = None) -> tuple[Job, bool]:
    """Store ``job`` unless a job holds its ``unique_key``; return (job, created).

    The database's unique constraint decides, so two processes enqueueing the same key at
    once get one job between them.
    """
    if job.unique_key is None:
        raise ValueError("enqueue_unique needs a job with a unique_key.")
    stored = enqueue_jobs([job], using=using, now=now)[0]
    return stored, stored is job


# --- Webhooks -------------------------------------------------------------------------------

WEBHOOK_TASK = "asyncjobs.outbound.deliver_webhook"
CALLBACK_TASK = "asyncjobs.outbound.call_url"
# Outbound calls fail at once on a refused URL or a 4xx that retrying will not fix.
OUTBOUND_FAIL_ON = (
    class_path(outbound.PermanentHTTPError),
    class_path(outbound.OutboundURLRefusedError),
)


def _schedule_webhook(job: Job, *, now: datetime, using: str) -> None:
    """Enqueue the delivery of ``job``'s end-of-job webhook, in the caller's transaction.

    The delivery is a job of its own (retried with exponential backoff), so the notice is
    sent if and only if the end of the job commits.
    """
    if not job.webhook_url or job.task_path == WEBHOOK_TASK:
        return
    queue = jobs_settings.WEBHOOK_QUEUE or job.queue_name
    options = dataclasses.replace(
        resolve_options(
            queue,
            max_attempts=jobs_settings.WEBHOOK_MAX_ATTEMPTS,
            retry_on=(Exception,),
            fail_on=OUTBOUND_FAIL_ON,
        ),
        # The request has its own deadline, OUTBOUND_TIMEOUT; this bounds the whole job.
        timeout=jobs_settings.OUTBOUND_TIMEOUT * 2,
    )
    delivery = build_job(
        task_path=WEBHOOK_TASK,
        args=(),
        kwargs={"job_id": str(job.pk), "url": job.webhook_url},
        queue_name=queue,
        priority=job.priority,
        run_after=None,
        backend=job.backend,
        options=options,
        now=now,
    )
    delivery.enqueued_by_id = job.enqueued_by_id
    delivery.save(using=using, force_insert=True)


def enqueue_callback(
    *,
    url: str,
    payload: Any = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    max_attempts: int = 4,
    backoff: retry.Backoff | None = None,
    priority: int = 0,
    run_after: datetime | None = None,
    queue_name: str = "default",
    webhook_url: str = "",
    unique_key: str | None = None,
    timeout: timedelta | None = None,
    backend: str = "default",
    now: datetime,
    using: str = "default",
) -> tuple[Job, bool]:
    """Enqueue an HTTP callback job: a worker sends ``payload`` as JSON to ``url``.

    2xx succeeds; 408, 425, 429, 5xx, timeouts and connection errors are retried with
    ``backoff``; other 4xx and refused URLs fail at once. With ``unique_key``, an existing job
    with that key is returned instead. Returns (job, created). Raises
    ``OutboundURLRefusedError`` for a URL that may not be called and ``InvalidHeaderError``
    for headers that cannot be sent.
    """
    outbound.validate_url(url)
    headers = outbound.check_headers(headers or {})
    options = JobOptions(
        max_attempts=max_attempts,
        backoff=backoff or retry.DEFAULT_BACKOFF,
        retry_on=("builtins.Exception",),
        fail_on=OUTBOUND_FAIL_ON,
        timeout=timeout or jobs_settings.OUTBOUND_TIMEOUT * 2,
    )
    job = build_job(
        task_path=CALLBACK_TASK,
        args=(),
        kwargs={"url": url, "method": method, "headers": headers, "payload": payload},
        queue_name=queue_name,
        priority=priority,
        run_after=run_after,
        backend=backend,
        options=options,
        now=now,
        webhook_url=webhook_url,
        unique_key=unique_key,
        unique_for=jobs_settings.IDEMPOTENCY_KEY_TTL,
    )
    stored = enqueue_jobs([job], using=using, now=now)[0]
    return stored, stored is job


# --- Recording attempts ---------------------------------------------------------------------


def error_fields(error: BaseException, traceback_text: str | None = None) -> dict[str, str]:
    """The Attempt columns describing ``error``."""
    text = traceback_text if traceback_text is not None else "".join(tb.format_exception(error))
    return {
        "error_class": safe_text(class_path(type(error)), 255, keep="end"),
        "error_message": safe_text(error, MAX_ERROR_MESSAGE),
        "traceback": safe_text(text, MAX_TRACEBACK, keep="end"),
    }


@functools.lru_cache(maxsize=256)
def _exception_class(path: str) -> type[BaseException] | None:
    try:
        cls = import_string(path)
    except ImportError:
        logger.warning("Exception class %s in a retry policy does not import", path)
        return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def _matches(error: BaseException, paths: Iterable[str]) -> bool:
    return any(
        (cls := _exception_class(path)) is not None and isinstance(error, cls) for path in paths
    )


def is_retryable(job: Job, error: BaseException) -> bool:
    """Whether the job's policy retries after ``error`` (attempts permitting).

    ``fail_on`` wins over everything. A ``Retry`` request, a timeout and a lost worker are
    retried whatever ``retry_on`` says; other errors are retried if they match ``retry_on``.
    A ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``
    raised by task code) counts as an ``Exception`` there: the default policy retries it.
    """
    if _matches(error, job.fail_on):
        return False
    if isinstance(error, Retry | JobTimeoutError | WorkerLostError | TaskImportError):
        return True
    if not isinstance(error, Exception) and _matches(_AN_EXCEPTION, job.retry_on):
        return True
    return _matches(error, job.retry_on)


_AN_EXCEPTION = Exception()


def _status_code(value: Any) -> int | None:
    """``value`` if it is an HTTP status code (an int from 100 to 599), else None."""
    return value if type(value) is int and 100 <= value <= 599 else None


def http_status_of(error: BaseException) -> int | None:
    """The HTTP status an error carries, if any: ``error.http_status`` (asyncjobs' own
    callback errors), or the status of the response on the error (httpx and requests:
    ``error.response.status_code``; urllib's ``HTTPError``: ``error.code``), looked for on
    the error and then on its causes, so that a task's own error raised ``from`` an HTTP
    error counts too. Duck-typed: no HTTP library is imported."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 5:
        for candidate in (
            getattr(current, "http_status", None),
            getattr(getattr(current, "response", None), "status_code", None),
            getattr(getattr(current, "response", None), "status", None),
            getattr(current, "code", None) if hasattr(current, "getcode") else None,
        ):
            status = _status_code(candidate)
            if status is not None:
                return status
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _close_attempt(job: Job, *, worker_id: str, now: datetime, **fields: Any) -> bool:
    """Finish the job's current attempt if it is still open and still ours."""
    return (
        Attempt.objects.using(job._state.db)
        .filter(job_id=job.pk, number=job.attempts, worker_id=worker_id, finished_at__isnull=True)
        .update(finished_at=now, **fields)
        == 1
    )


def _started(started_at: datetime | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attempt's and the job's fields that move an attempt's start from its claim to
    ``started_at`` (when the task began, after waiting in a prefetch buffer); none if None.

    The job's own ``started_at`` stays its first claim's time: ``TaskResult.started_at`` must
    read the same while the job runs and after it finished (django.tasks' contract), and
    only the claim writes it. (A prefetched job's claim precedes its start by at most
    ``PREFETCH_MAX_WAIT``; the attempt row has the exact start.)"""
    if started_at is None:
        return {}, {}
    return {"started_at": started_at}, {"last_attempted_at": started_at}


def record_success(
    job: Job,
    *,
    worker_id: str,
    return_value: Any,
    now: datetime,
    http_status: int | None = None,
    started_at: datetime | None = None,
) -> bool:
    """Record that the current attempt of ``job`` succeeded with ``return_value``.

    ``return_value`` must already be JSON-normalised; ``started_at`` (when the task began,
    if later than its claim) replaces the claim time. Returns False, changing nothing, if
    the attempt is no longer this worker's (its lease was lost and the job rescued).
    """
    using = job._state.db or "default"
    success = Success(job, return_value, now, http_status=http_status, started_at=started_at)
    # The batch completion's statements, for a batch of one (one function per transition).
    return job.pk in record_successes([success], worker_id=worker_id, using=using)


@dataclass
class Success:
    """A successful attempt waiting to be recorded by ``record_successes``."""

    job: Job
    return_value: Any  # already JSON-normalised
    finished_at: datetime
    http_status: int | None = None
    # When the task began running, if later than the claim (it waited in the worker's
    # prefetch buffer); replaces the claim time on the attempt.
    started_at: datetime | None = None


def record_successes(batch: Sequence[Success], *, worker_id: str, using: str) -> set[Any]:
    """Record many successful attempts in one transaction (one commit).

    Same rules as ``record_success``, job by job: an attempt that is no longer this worker's
    changes nothing. Webhook deliveries are enqueued in the same transaction. Returns the
    primary keys of the jobs recorded.
    """
    with transaction.atomic(using=using):
        recorded = db.complete_succeeded(
            using,
            [
                (s.job, s.return_value, _status_code(s.http_status), s.started_at, s.finished_at)
                for s in batch
            ],
            worker_id=worker_id,
        )
        for success in batch:
            job = success.job
            if job.pk not in recorded:
                continue
            job.status, job.return_value = JobStatus.SUCCEEDED, success.return_value
            job.finished_at = success.finished_at
            _schedule_webhook(job, now=success.finished_at, using=using)
    return recorded


def record_failure(
    job: Job,
    *,
    worker_id: str,
    error: BaseException,
    now: datetime,
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
    traceback_text: str | None = None,
    retryable: bool | None = None,
    http_status: int | None = None,
    started_at: datetime | None = None,
) -> JobStatus | None:
    """Record a failed attempt of ``job`` and move the job on.

    The job is scheduled again (after the backoff, or a ``Retry`` exception's delay) if the
    error is retryable and attempts are left, unless it was asked to cancel; it ends
    ``cancelled`` for a ``cancelled`` outcome or a retryable failure of a job asked to cancel,
    else ``failed`` (the dead letter). ``retryable`` overrides the policy check;
    ``started_at`` as for ``record_success``. Returns the job's new status, or None,
    changing nothing, if the attempt is no longer this worker's.
    """
    using = job._state.db or "default"
    if outcome == AttemptOutcome.CANCELLED:
        new_status, run_after = JobStatus.CANCELLED, job.run_after
    else:
        if retryable is None:
            retryable = is_retryable(job, error)
        if retryable and job.attempts_left > 0:
            delay = error.delay if isinstance(error, Retry) and error.delay is not None else None
            if delay is None:
                used = job.attempts - job.free_attempts
                delay = retry.from_json(job.backoff).delay(used) if job.backoff else timedelta(0)
            run_after = now + delay
            new_status = JobStatus.SCHEDULED if run_after > now else JobStatus.QUEUED
        else:
            new_status, run_after = JobStatus.FAILED, job.run_after
    finished_at = now if new_status in (JobStatus.FAILED, JobStatus.CANCELLED) else None
    if http_status is None:
        http_status = http_status_of(error)
    attempt_start, job_start = _started(started_at)
    with transaction.atomic(using=using):
        if not _close_attempt(
            job,
            worker_id=worker_id,
            now=now,
            outcome=outcome,
            http_status=_status_code(http_status),
            **attempt_start,
            **error_fields(error, traceback_text),
        ):
            return None
        mine = Job.objects.using(using).filter(
            pk=job.pk, status=JobStatus.RUNNING, worker_id=worker_id
        )
        # Asked to cancel while this attempt ran (a task that ignored the request): no
        # further attempt. The row lock orders this read with cancel_job's write.
        if (
            new_status not in TERMINAL_STATUSES
            and mine.select_for_update()
            .filter(cancel_requested_at__isnull=False)
            .values_list("pk", flat=True)
            .first()
            is not None
        ):
            new_status, run_after, finished_at = JobStatus.CANCELLED, job.run_after, now
        mine.update(
            **job_start,
            status=new_status,
            run_after=run_after,
            finished_at=finished_at,
            worker_id="",
            lease_expires_at=None,
            unique_key=None if finished_at is not None else F("unique_key"),
            last_error_class=safe_text(class_path(type(error)), 255, keep="end"),
            last_error_message=safe_text(error, MAX_ERROR_MESSAGE),
        )
        job.status, job.run_after, job.finished_at = new_status, run_after, finished_at
        if new_status in TERMINAL_STATUSES:
            _schedule_webhook(job, now=now, using=using)
    return new_status


def claim_job(
    job_id: Any, *, worker_id: str, now: datetime, lease: timedelta, using: str = "default"
) -> Job | None:
    """Claim one particular queued job for ``worker_id`` (as a worker's claim would: status,
    lease, attempt row); None if it is not queued. For in-process runs (``RUN_INLINE``)."""
    with transaction.atomic(using=using):
        moved = (
            Job.objects.using(using)
            .filter(pk=job_id, status=JobStatus.QUEUED)
            .update(
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                lease_expires_at=now + lease,
                attempts=F("attempts") + 1,
                started_at=Coalesce("started_at", Value(now)),
                last_attempted_at=now,
            )
        )
        if not moved:
            return None
        job = Job.objects.using(using).get(pk=job_id)
        Attempt.objects.using(using).create(
            job=job, number=job.attempts, worker_id=worker_id, started_at=now
        )
    return job


def release_jobs(jobs: Iterable[Job], *, worker_id: str, now: datetime) -> int:
    """Give back running jobs of a worker that is shutting down.

    Each interrupted attempt is recorded as lost, the job is queued again at once and the
    attempt does not count against ``max_attempts``. Returns how many jobs were released.
    """
    released = 0
    for job in jobs:
        using = job._state.db or "default"
        with transaction.atomic(using=using):
            if not _close_attempt(
                job,
                worker_id=worker_id,
                now=now,
                outcome=AttemptOutcome.LOST,
                **error_fields(
                    WorkerShutdownError(f"worker {worker_id} shut down before the job finished"),
                    traceback_text="",
                ),
            ):
                continue
            released += (
                Job.objects.using(using)
                .filter(pk=job.pk, status=JobStatus.RUNNING, worker_id=worker_id)
                .update(
                    status=JobStatus.QUEUED,
                    run_after=now,
                    free_attempts=F("free_attempts") + 1,
                    worker_id="",
                    lease_expires_at=None,
                )
            )
    return released


def unclaim_jobs(jobs: Sequence[Job], *, worker_id: str, using: str) -> int:
    """Give back claimed jobs that a worker never started (its prefetch buffer), as if the
    claim had not happened: the open attempt row is deleted, ``attempts`` goes back down, and
    the job is queued again in its old place (``run_after`` unchanged). One transaction.
    Jobs no longer this worker's (rescued meanwhile) are left alone. Returns how many jobs
    were given back.
    """
    if not jobs:
        return 0
    mine = Q()
    for job in jobs:
        mine |= Q(job_id=job.pk, number=job.attempts)
    previous_start = (
        Attempt.objects.using(using)
        .filter(job_id=OuterRef("pk"))
        .order_by("-number")
        .values("started_at")[:1]
    )
    with transaction.atomic(using=using):
        # An open attempt of ours exists exactly while the job is running in our hands
        # (both change in one transaction), so the two statements match the same jobs.
        Attempt.objects.using(using).filter(
            mine, worker_id=worker_id, finished_at__isnull=True
        ).delete()
        return (
            Job.objects.using(using)
            .filter(pk__in=[job.pk for job in jobs], status=JobStatus.RUNNING, worker_id=worker_id)
            .update(
                # Before ``attempts``: MariaDB/MySQL assign left to right, each assignment
                # seeing the ones before it (elsewhere they all see the old row).
                started_at=Case(
                    When(attempts=1, then=Value(None, output_field=DateTimeField())),
                    default=F("started_at"),
                ),
                last_attempted_at=Subquery(previous_start),
                status=JobStatus.QUEUED,
                worker_id="",
                lease_expires_at=None,
                attempts=F("attempts") - 1,
            )
        )


def rescue_expired(*, now: datetime, using: str = "default", limit: int = 500) -> int:
    """Recover running jobs whose lease expired: their worker died or lost the database.

    The open attempt is recorded as lost; the job is queued again at once, or fails for good
    if it has no attempts left. Returns how many jobs were rescued.
    """
    expired = list(
        Job.objects.using(using)
        .lease_expired(now)
        .only(
            "id",
            "attempts",
            "max_attempts",
            "free_attempts",
            "worker_id",
            "fail_on",
            "webhook_url",
            "task_path",
            "queue_name",
            "priority",
            "backend",
            "enqueued_by",
        )[:limit]
    )
    for job in expired:
        error = WorkerLostError(
            f"worker {job.worker_id} stopped renewing its lease; the attempt was lost"
        )
        retryable = is_retryable(job, error) and job.attempts_left > 0
        with transaction.atomic(using=using):
            moved = (
                Job.objects.using(using)
                .filter(pk=job.pk, status=JobStatus.RUNNING, lease_expires_at__lt=now)
                .update(
                    status=JobStatus.QUEUED if retryable else JobStatus.FAILED,
                    run_after=now,
                    finished_at=None if retryable else now,
                    worker_id="",
                    lease_expires_at=None,
                    unique_key=F("unique_key") if retryable else None,
                    last_error_class=class_path(WorkerLostError),
                    last_error_message=safe_text(error, MAX_ERROR_MESSAGE),
                )
            )
            if moved:
                Attempt.objects.using(using).filter(
                    job_id=job.pk, number=job.attempts, finished_at__isnull=True
                ).update(
                    finished_at=now,
                    outcome=AttemptOutcome.LOST,
                    **error_fields(error, traceback_text=""),
                )
                if not retryable:
                    _schedule_webhook(job, now=now, using=using)
        if moved:
            logger.warning(
                "Rescued job %s from lost worker %s (%s)",
                job.pk,
                job.worker_id,
                "requeued" if retryable else "failed: no attempts left",
                extra={"job_id": str(job.pk), "worker_id": job.worker_id},
            )
    return len(expired)


def promote_due(
    *, now: datetime, queues: Sequence[str] | None = None, using: str = "default", limit: int = 1000
) -> tuple[int, datetime | None]:
    """Move scheduled jobs whose ``run_after`` has come to ``queued``.

    Returns how many moved and when the next scheduled job of ``queues`` is due (or None).
    """
    jobs = Job.objects.using(using).in_queues(list(queues) if queues is not None else None)
    due_ids = list(jobs.due(now).order_by("run_after").values_list("pk", flat=True)[:limit])
    moved = 0
    if due_ids:
        moved = (
            Job.objects.using(using)
            .filter(pk__in=due_ids, status=JobStatus.SCHEDULED)
            .update(status=JobStatus.QUEUED)
        )
    # One ordered index probe per queue. A MIN() over all scheduled jobs of the queues read
    # every one of them when the statistics were stale (38 ms at 100,000 future jobs, every
    # second, in every worker).
    scheduled = Job.objects.using(using).filter(status=JobStatus.SCHEDULED).order_by("run_after")
    firsts = [
        (scheduled if queue is None else scheduled.filter(queue_name=queue))
        .values_list("run_after", flat=True)
        .first()
        for queue in (queues if queues is not None else [None])
    ]
    next_due = min((when for when in firsts if when is not None), default=None)
    return moved, next_due


# --- Operator actions -----------------------------------------------------------------------


def _get(job_id: uuid.UUID | str, using: str) -> Job:
    try:
        return Job.objects.using(using).get(pk=job_id)
    except (Job.DoesNotExist, ValidationError, ValueError, TypeError) as exc:
        # A malformed id is as unknown as a missing one.
        raise JobNotFoundError(f"No job with id {job_id!r}.") from exc


def _current_status(job: Job, using: str) -> str:
    """``job``'s status now, for an error saying why it could not move (it may have moved
    since it was read); raises ``JobNotFoundError`` if it was deleted meanwhile."""
    status = Job.objects.using(using).filter(pk=job.pk).values_list("status", flat=True).first()
    if status is None:
        raise JobNotFoundError(f"No job with id {str(job.pk)!r}.")
    return status


RETRYABLE_STATUSES = (JobStatus.FAILED, JobStatus.CANCELLED)


def retry_jobs(jobs: Any, *, now: datetime) -> int:
    """Queue again every failed or cancelled job of the queryset ``jobs``, with a fresh
    attempt budget and their history kept, in one statement. Returns how many moved; jobs in
    other statuses are left alone."""
    return int(
        jobs.filter(status__in=RETRYABLE_STATUSES).update(
            status=JobStatus.QUEUED,
            run_after=now,
            finished_at=None,
            return_value=None,
            cancel_requested_at=None,
            free_attempts=F("attempts"),
        )
    )


def retry_job(
    job_id: uuid.UUID | str, *, now: datetime | None = None, using: str = "default"
) -> Job:
    """Queue a failed or cancelled job again with a fresh attempt budget.

    Its attempt history is kept. Raises ``JobNotFoundError`` for an unknown id and
    ``InvalidTransitionError`` if the job is not failed or cancelled.
    """
    now = now or timezone.now()
    job = _get(job_id, using)
    if not retry_jobs(Job.objects.using(using).filter(pk=job.pk), now=now):
        raise InvalidTransitionError(
            f"Job {job.pk} is {_current_status(job, using)}; only failed or cancelled jobs "
            "can be retried."
        )
    job.refresh_from_db(using=using)
    logger.info("Job %s queued again by retry", job.pk, extra={"job_id": str(job.pk)})
    return job


def run_job_now(
    job_id: uuid.UUID | str, *, now: datetime | None = None, using: str = "default"
) -> Job:
    """Make a scheduled job (delayed, or waiting for its retry) ready at once.

    Raises ``JobNotFoundError`` for an unknown id and ``InvalidTransitionError`` if the job
    is not scheduled.
    """
    now = now or timezone.now()
    job = _get(job_id, using)
    moved = (
        Job.objects.using(using)
        .filter(pk=job.pk, status=JobStatus.SCHEDULED)
        .update(status=JobStatus.QUEUED, run_after=now)
    )
    if not moved:
        raise InvalidTransitionError(
            f"Job {job.pk} is {_current_status(job, using)}; only scheduled jobs can run now."
        )
    job.refresh_from_db(using=using)
    return job


def discard_jobs(jobs: Any) -> int:
    """Delete the finished jobs (and their attempts) of the queryset ``jobs``; jobs still
    waiting or running are left alone, and so is a job that another transaction holds (being
    retried, say). Returns how many jobs were deleted."""
    using = jobs.db
    ids = list(jobs.filter(status__in=TERMINAL_STATUSES).values_list("pk", flat=True))
    return sum(
        _delete_finished(Job.objects.using(using).filter(pk__in=ids[start : start + 500]), 500)
        for start in range(0, len(ids), 500)
    )


def _delete_finished(jobs: Any, limit: int) -> int:
    """Delete at most ``limit`` finished jobs of the queryset ``jobs``, those that finished
    first, with their attempts, in one transaction. The rows are locked first and rows another
    transaction holds are skipped (PostgreSQL; SQLite has one writer), so a job retried
    meanwhile is either queued again before this, and left alone, or deleted first, and the
    retry finds no job. Returns how many were deleted."""
    using = jobs.db
    with transaction.atomic(using=using):
        ids = list(
            jobs.filter(status__in=TERMINAL_STATUSES)
            .order_by("finished_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        _, per_model = Job.objects.using(using).filter(pk__in=ids).only("pk").delete()
        return per_model.get(Job._meta.label, 0)


def cancel_job(
    job_id: uuid.UUID | str, *, now: datetime | None = None, using: str = "default"
) -> Job:
    """Cancel a job.

    A scheduled or queued job is cancelled at once. A running job is asked to stop: its task
    sees ``context.cancel_requested`` within a heartbeat and ends ``cancelled`` when it raises
    ``JobCancelled`` (see ``context.raise_if_cancelled()``); a task that ignores the request
    finishes normally if it succeeds, and ends ``cancelled``, not retried, if it fails.
    Cancelling a cancelled job does nothing. Raises ``JobNotFoundError`` for an unknown id
    and ``InvalidTransitionError`` for a job that succeeded or failed.
    """
    now = now or timezone.now()
    job = _get(job_id, using)
    if job.status == JobStatus.CANCELLED:
        return job
    jobs = Job.objects.using(using).filter(pk=job.pk)
    # Two passes: a running job whose attempt ends between the two updates (retried, so
    # waiting again) is cancelled on the second.
    for _ in range(2):
        with transaction.atomic(using=using):
            cancelled = jobs.filter(status__in=WAITING_STATUSES).update(
                status=JobStatus.CANCELLED,
                finished_at=now,
                cancel_requested_at=now,
                unique_key=None,
            )
            if cancelled:
                _schedule_webhook(job, now=now, using=using)
        if cancelled:
            logger.info("Job %s cancelled", job.pk, extra={"job_id": str(job.pk)})
            break
        if jobs.filter(status=JobStatus.RUNNING).update(cancel_requested_at=now):
            logger.info("Job %s asked to cancel", job.pk, extra={"job_id": str(job.pk)})
            break
    else:
        job.refresh_from_db(using=using)
        if job.status != JobStatus.CANCELLED:
            raise InvalidTransitionError(
                f"Job {job.pk} already {job.status}; it cannot be cancelled."
            )
    job.refresh_from_db(using=using)
    return job


def set_progress(
    job_id: uuid.UUID | str,
    *,
    current: float,
    total: float | None = None,
    message: str = "",
    using: str = "default",
) -> dict[str, Any]:
    """Store a running job's progress and return it.

    ``percent`` is derived when ``total`` is known. Raises ``ValueError`` for values that
    make no sense (negative, or above ``total``).
    """
    if current < 0 or (total is not None and (total <= 0 or current > total)):
        raise ValueError("progress needs 0 <= current <= total and total > 0.")
    progress: dict[str, Any] = {
        "current": current,
        "total": total,
        "message": safe_text(message, 500),
    }
    if total:
        progress["percent"] = round(100 * current / total, 2)
    Job.objects.using(using).filter(pk=job_id, status__in=ACTIVE_STATUSES).update(progress=progress)
    return progress


# --- Workers --------------------------------------------------------------------------------


def new_worker_id() -> str:
    """A worker id that says where the worker runs: ``host-pid-random``."""
    host = socket.gethostname().split(".")[0][:40]
    return f"{host}-{os.getpid()}-{get_random_string(8)}"


def register_worker(
    *,
    worker_id: str,
    queues: Sequence[str],
    concurrency: int,
    backend: str,
    now: datetime,
    using: str = "default",
) -> Worker:
    """Create the Worker row of a starting worker process."""
    return Worker.objects.using(using).create(
        id=worker_id,
        backend=backend,
        hostname=socket.gethostname()[:255],
        pid=os.getpid(),
        queues=list(queues),
        concurrency=concurrency,
        started_at=now,
        last_heartbeat_at=now,
    )


def heartbeat(
    *,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    job_ids: Sequence[str] = (),
    processed: int = 0,
    using: str = "default",
) -> set[str]:
    """Tell the database the worker is alive and extend the leases of the jobs it runs.

    Only ``job_ids``, the jobs the worker knows it holds, are extended: a job claimed in a
    round trip whose answer never arrived is left to expire and be rescued. ``processed`` is
    added to the worker's count of finished jobs. Returns the ids among ``job_ids`` that were
    asked to cancel.
    """
    with transaction.atomic(using=using):
        Worker.objects.using(using).filter(pk=worker_id).update(
            last_heartbeat_at=now,
            jobs_processed=F("jobs_processed") + processed,
            status=Case(
                When(status=WorkerStatus.LOST, then=Value(WorkerStatus.RUNNING)),
                default=F("status"),
            ),
        )
        if not job_ids:
            return set()
        mine = Job.objects.using(using).running().filter(worker_id=worker_id, pk__in=job_ids)
        mine.update(lease_expires_at=now + lease)
        return {
            str(pk)
            for pk in mine.filter(cancel_requested_at__isnull=False).values_list("pk", flat=True)
        }


def set_worker_status(
    worker_id: str, status: WorkerStatus, *, now: datetime, using: str = "default"
) -> None:
    """Record a worker's stopping or stopped state."""
    fields: dict[str, Any] = {"status": status, "last_heartbeat_at": now}
    if status == WorkerStatus.STOPPED:
        fields["stopped_at"] = now
    Worker.objects.using(using).filter(pk=worker_id).update(**fields)


def mark_lost_workers(*, now: datetime, stale_after: timedelta, using: str = "default") -> int:
    """Mark workers that stopped heartbeating as lost. Returns how many."""
    return (
        Worker.objects.using(using)
        .stale(now, stale_after)
        .update(status=WorkerStatus.LOST, stopped_at=now)
    )


def prune_workers(*, now: datetime, older_than: timedelta, using: str = "default") -> int:
    """Delete rows of workers that stopped (or were lost) more than ``older_than`` ago."""
    deleted, _ = (
        Worker.objects.using(using)
        .filter(
            status__in=[WorkerStatus.STOPPED, WorkerStatus.LOST], stopped_at__lt=now - older_than
        )
        .delete()
    )
    return deleted


# --- Retention -------------------------------------------------------------------------------


def prune_jobs(
    *,
    now: datetime,
    older_than: dict[str, timedelta | None],
    batch_size: int = 500,
    max_batches: int | None = None,
    time_limit: timedelta | None = None,
    dry_run: bool = False,
    using: str = "default",
) -> dict[str, int]:
    """Delete finished jobs (and their attempts) that finished before ``now - age``.

    ``older_than`` maps a terminal status to its age (None keeps that status). Deletes the
    oldest first, in batches of ``batch_size``, each in its own short transaction, so it never
    holds long locks or slows the claim query. The statuses take turns, a batch each, so that
    a large backlog of one does not keep the others from being pruned. Stops when nothing old
    is left, or a status has had ``max_batches`` batches; past ``time_limit`` no new batch
    starts (the first one always does). With ``dry_run`` it only counts. Returns the number
    per status.
    """
    counts: dict[str, int] = {}
    cutoffs: dict[str, datetime] = {}
    for status, age in older_than.items():
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"Only finished jobs can be pruned, not {status!r}.")
        if age is not None:
            cutoffs[status] = now - age
            counts[status] = 0
    if dry_run:
        return {
            status: Job.objects.using(using).filter(status=status, finished_at__lt=cutoff).count()
            for status, cutoff in cutoffs.items()
        }
    stop_at = None if time_limit is None else time.monotonic() + time_limit.total_seconds()
    batches = dict.fromkeys(cutoffs, 0)
    while cutoffs:
        for status, cutoff in list(cutoffs.items()):
            old = Job.objects.using(using).filter(status=status, finished_at__lt=cutoff)
            deleted = _delete_finished(old, batch_size)
            counts[status] += deleted
            batches[status] += 1
            if deleted < batch_size or batches[status] == max_batches:
                del cutoffs[status]
            if stop_at is not None and time.monotonic() >= stop_at:
                return counts
    return counts


# --- Queues ----------------------------------------------------------------------------------


PAUSE_QUEUE_PERMISSION = "asyncjobs.pause_queue"


def can_pause_queues(user: Any) -> bool:
    """Whether ``user`` may pause and resume queues: the ``asyncjobs.pause_queue``
    permission (superusers have it). The one check behind the admin's pages and actions, the
    API's ``/jobs/queues/<name>/pause/`` and ``set_queue_paused(..., user=...)``."""
    return bool(user is not None and user.has_perm(PAUSE_QUEUE_PERMISSION))


def check_queue_name(name: str, *, paused: bool, using: str = "default") -> None:
    """Refuse to pause a queue that is not configured: raises ``UnknownQueueError`` unless
    ``name`` is one of ``monitoring.configured_queues`` (or a backend takes any queue name).
    Resuming a queue that is paused is always allowed, so a queue removed from the settings
    while paused can still be resumed."""
    valid = bool(name) and len(name) <= int(QueueState._meta.get_field("name").max_length or 0)
    valid = valid and name.isprintable()  # no NUL, which PostgreSQL refuses in a statement
    known = monitoring.configured_queues(using=using)
    if valid and (name in known or monitoring.accepts_any_queue(using=using)):
        return
    if valid and not paused and QueueState.objects.using(using).filter(name=name).exists():
        return
    raise UnknownQueueError(name, known)


def set_queue_paused(
    name: str, paused: bool, *, now: datetime, using: str = "default", user: Any = None
) -> None:
    """Pause or resume a queue. Workers stop (or start) claiming from it at once on
    PostgreSQL (they are notified at commit), within one poll interval elsewhere; enqueueing
    to a paused queue still works. Every path that pauses or resumes (the admin, the API,
    ``manage.py jobqueue``, Python code) comes through here.

    Parameters: ``name``, the queue; ``paused``, pause (True) or resume (False); ``now``, the
    time recorded as ``changed_at``; ``using``, the database alias; ``user``, the user acting
    for the admin and the API: ``django.core.exceptions.PermissionDenied`` unless
    ``can_pause_queues(user)`` (None, for code and the command line, checks nothing).
    Raises ``UnknownQueueError`` as ``check_queue_name`` does.
    """
    if user is not None and not can_pause_queues(user):
        raise PermissionDenied("Pausing and resuming queues needs asyncjobs.pause_queue.")
    check_queue_name(name, paused=paused, using=using)
    with transaction.atomic(using=using):
        QueueState.objects.using(using).update_or_create(
            name=name, defaults={"paused": paused, "changed_at": now}
        )
        db.announce_queue_change(using, name)
    logger.info("Queue %s %s", name, "paused" if paused else "resumed", extra={"queue": name})


def paused_queues(*, using: str = "default") -> set[str]:
    """The names of the paused queues."""
    return set(QueueState.objects.using(using).filter(paused=True).values_list("name", flat=True))


# --- Limits ----------------------------------------------------------------------------------

# Rate limits are kept where the remote service counts: at the task's start, not at the
# claim. A claim gives each rate-limited job a start slot (wall clock), at least
# START_HANDOFF after the claim (time for the worker to hand the job to an idle slot thread)
# and at most START_LEAD after it (a claim may take a slot that soon, so that back-to-back
# claims keep the slots contiguous). The slot thread starts the task at its slot, never
# before, and gives the job back unstarted if it reached the slot later than
# START_TOLERANCE. Slots are spaced (period + START_ALLOWANCE) / N: N + 1 consecutive starts
# then span at least the period as long as each begins within START_ALLOWANCE of its slot,
# which leaves START_ALLOWANCE - START_TOLERANCE for the step from the slot thread's last look
# at the clock to the task's first line (a few Python calls).
START_HANDOFF = timedelta(milliseconds=20)
START_LEAD = timedelta(milliseconds=100)
START_TOLERANCE = timedelta(milliseconds=15)
START_ALLOWANCE = timedelta(milliseconds=30)


def start_spacing(rate: str | None) -> timedelta | None:
    """The time between start slots for a rate limit such as ``"10/s"`` (None for None):
    ``(period + START_ALLOWANCE) / N``, so that no window of one period holds more than N
    starts made within ``START_ALLOWANCE`` of their slots."""
    parts = rate_parts(rate)
    if parts is None:
        return None
    count, period = parts
    return (period + START_ALLOWANCE) / count


def start_slot(next_at: datetime | None, *, now: datetime) -> datetime | None:
    """The start slot a claim at ``now`` may give a job under a rate limit whose next slot is
    ``next_at`` (None: never used), or None if that slot is more than ``START_LEAD`` away."""
    if next_at is not None and next_at > now + START_LEAD:
        return None
    return max(next_at or now, now + START_HANDOFF)


@dataclass
class LimitedClaim:
    """What a claim under limits took: the jobs, the start slot of each job under a rate
    limit (by primary key; the slot thread must not start it before, nor much after), and
    when a rate limit may let the next claim take more (``retry_at``, not before the claim),
    or None when nothing more is expected from the rate limit."""

    jobs: list[Job] = dataclasses.field(default_factory=list)
    start_at: dict[Any, datetime] = dataclasses.field(default_factory=dict)
    retry_at: datetime | None = None


def queue_limits(queue: str) -> tuple[timedelta | None, int | None]:
    """A queue's rate limit, as the time between its start slots (``start_spacing``), and its
    concurrency limit."""
    spacing = start_spacing(jobs_settings.queue_option(queue, "RATE_LIMIT"))
    concurrency = jobs_settings.queue_option(queue, "CONCURRENCY")
    return spacing, concurrency


def claim_limited(
    claim: Callable[[int, datetime, datetime | None], LimitedClaim],
    *,
    queue: str,
    limit: int,
    clock: Callable[[], datetime],
    using: str = "default",
) -> LimitedClaim:
    """Claim from a queue with a ``RATE_LIMIT`` and/or ``CONCURRENCY``, cluster-wide.

    Holds the queue's row lock while it counts and claims, so concurrent workers take turns
    and the limits hold exactly. ``claim(limit, now, start_at)`` claims up to ``limit`` ready
    jobs of the queue at ``now``, to start at ``start_at`` (None without a rate limit);
    ``clock()`` is read after the lock is taken, so start times are those of the actual
    claims. Under a rate limit a claim takes one job, with the next start slot (see
    ``START_LEAD``): a GCRA with a burst of one whose slots are ``start_spacing`` apart. The
    caller must start the job at its slot and give it back if it cannot (see
    ``START_TOLERANCE``); then no window of one period holds more than N starts. Running jobs
    of a dead worker keep their concurrency slot until their lease expires and they are
    rescued.

    ``retry_at`` is when to claim again: in the future when the rate limit holds ready jobs
    back, not before now right after a claim (more may wait), and None when nothing was
    claimed for want of ready jobs (an idle queue must not make its worker poll faster than
    its poll interval).
    """
    spacing, concurrency = queue_limits(queue)
    with transaction.atomic(using=using):
        QueueState.objects.using(using).get_or_create(name=queue, defaults={"changed_at": clock()})
        state = QueueState.objects.using(using).select_for_update().get(name=queue)
        now = clock()
        allowance = limit
        if concurrency is not None:
            running = Job.objects.using(using).running().filter(queue_name=queue).count()
            allowance = min(allowance, concurrency - running)
        slot = None
        if spacing is not None:
            slot = start_slot(state.rate_next_at, now=now)
            if slot is None:
                assert state.rate_next_at is not None  # (start_slot gives a slot without one)
                return LimitedClaim(retry_at=state.rate_next_at - START_LEAD)
            allowance = min(allowance, 1)
        if allowance <= 0:
            return LimitedClaim()
        claimed = claim(allowance, now, slot)
        if spacing is not None and slot is not None and claimed.jobs:
            state.rate_next_at = slot + spacing
            state.save(update_fields=["rate_next_at"])
            claimed.start_at.update(dict.fromkeys((job.pk for job in claimed.jobs), slot))
            claimed.retry_at = max(state.rate_next_at - START_LEAD, clock())
    return claimed


def keyed_waiting(*, queues: Sequence[str] | None, using: str = "default") -> set[str]:
    """The queues (of ``queues``) that hold ready jobs under a per-task or per-key limit."""
    keyed = db.ready_queues(using, plain=False)
    return keyed if queues is None else keyed & set(queues)


def claim_keyed(
    *,
    queue: str,
    limit: int,
    worker_id: str,
    clock: Callable[[], datetime],
    lease: timedelta,
    using: str = "default",
    candidates: int = 50,
    rated_limit: int | None = None,
    start_at: datetime | None = None,
) -> LimitedClaim:
    """Claim up to ``limit`` ready jobs of ``queue`` that are under a per-task or per-key
    limit, without breaking any: at most ``limit_concurrency`` running per key and starts at
    most at ``limit_rate`` per key, cluster-wide.

    Keys already at their limit are left out of the candidate query, so a saturated key never
    hides the jobs of free keys behind it. The limit rows of the candidate keys are locked (in
    key order, so claimers cannot deadlock) while the running jobs are counted and the chosen
    jobs are moved to running. ``clock()`` gives the time; it is read again once the locks
    are held, so start times are those of the actual claims.

    A job under a ``limit_rate`` gets a start slot, as in ``claim_limited`` (the key's slots
    are ``start_spacing`` apart), and at most ``rated_limit`` such jobs are taken (None: no
    cap beyond ``limit``). ``start_at``: the slot the queue's own rate limit gave this claim;
    a key's job is then taken only if the key allows a start at that slot, which it gets.
    ``retry_at``: when a key's rate limit may let a waiting job be claimed (None if no job
    waits for one, or ``rated_limit`` is 0).
    """
    jobs = Job.objects.using(using)
    now = clock()
    horizon = start_at if start_at is not None else now + START_LEAD
    with transaction.atomic(using=using):
        saturated = {
            row["limit_key"]
            for row in jobs.running()
            .exclude(limit_key="")
            .values("limit_key")
            .annotate(n=Count("pk"), cap=Min("limit_concurrency"))
            .order_by()
            if row["cap"] is not None and row["n"] >= row["cap"]
        }
        throttled: dict[str, datetime] = {
            key: at
            for key, at in LimitState.objects.using(using)
            .filter(rate_next_at__gt=horizon)
            .values_list("key", "rate_next_at")
            if at is not None
        }
        ready = jobs.ready().filter(queue_name=queue).exclude(limit_key="")
        retry_at: datetime | None = None
        if rated_limit is not None and rated_limit <= 0:
            ready = ready.filter(limit_rate="")  # no idle slot for a job under a rate
        elif throttled:
            # When a rate limit lets a waiting job of a throttled key be claimed: the worker
            # sleeps until then, not a whole poll interval (and not at all for idle keys).
            waiting = (
                ready.filter(limit_key__in=list(throttled))
                .values_list("limit_key", flat=True)
                .distinct()
                .order_by()
            )
            retry_at = min((throttled[key] - START_LEAD for key in waiting), default=None)
        pending = (
            ready.exclude(limit_key__in=saturated | set(throttled))
            .order_by("-priority", "run_after", "enqueued_at")
            .values_list("pk", "limit_key", "limit_concurrency", "limit_rate")[:candidates]
        )
        rows = list(pending)
        keys = sorted({key for _, key, _, _ in rows})
        if not keys:
            return LimitedClaim(retry_at=retry_at)
        for key in keys:
            LimitState.objects.using(using).get_or_create(key=key)
        states = {
            s.key: s
            for s in LimitState.objects.using(using)
            .select_for_update()
            .filter(key__in=keys)
            .order_by("key")
        }
        now = clock()
        running = dict(
            jobs.running()
            .filter(limit_key__in=keys)
            .values("limit_key")
            .annotate(n=Count("pk"))
            .values_list("limit_key", "n")
            .order_by()
        )
        chosen: list[Any] = []
        slots: dict[Any, datetime] = {}
        for pk, key, cap, rate in rows:
            if len(chosen) >= limit:
                break
            if cap is not None and running.get(key, 0) >= cap:
                continue
            state = states[key]
            if rate:
                if rated_limit is not None and len(slots) >= rated_limit:
                    continue
                if start_at is None:
                    slot = start_slot(state.rate_next_at, now=now)
                elif state.rate_next_at is None or state.rate_next_at <= start_at:
                    slot = start_at
                else:
                    slot = None
                if slot is None:
                    continue
                state.rate_next_at = slot + (start_spacing(rate) or timedelta(0))
                state.save(update_fields=["rate_next_at"])
                slots[pk] = slot
                # (the key may have more jobs waiting: look again when its next slot nears)
                later = max(state.rate_next_at - START_LEAD, now)
                retry_at = later if retry_at is None else min(retry_at, later)
            running[key] = running.get(key, 0) + 1
            chosen.append(pk)
        if not chosen:
            return LimitedClaim(retry_at=retry_at)
        # queued -> running and the attempt rows: the plain claim's own statements.
        claimed = db.start_jobs(using, chosen, worker_id=worker_id, now=now, lease=lease)
    return LimitedClaim(
        jobs=claimed,
        start_at={j.pk: slots[j.pk] for j in claimed if j.pk in slots},
        retry_at=retry_at,
    )
