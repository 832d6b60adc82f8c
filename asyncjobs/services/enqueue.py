"""Enqueueing: who enqueues (``enqueued_by``), building unsaved jobs (``job_maker``), storing
them with their unique keys and queue caps (``enqueue_jobs``), and scheduled jobs falling
due (``promote_due``)."""

import contextlib
import contextvars
import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from asyncjobs import db, outbound
from asyncjobs.conf import jobs_settings
from asyncjobs.db import fastpath
from asyncjobs.exceptions import ArgumentsTooLargeError, InvalidTransitionError, QueueFullError
from asyncjobs.models import UNSTARTED_STATUSES, Job, JobStatus, QueueState
from asyncjobs.services.policy import JobOptions
from asyncjobs.services.values import JSON, checked_json, json_size

# Who a request acts for, as ``request.user`` gives it.
User: TypeAlias = AbstractBaseUser | AnonymousUser

_enqueued_by: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "asyncjobs_enqueued_by", default=None
)


@contextlib.contextmanager
def enqueued_by(user: User | None) -> Iterator[None]:
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


def current_owner() -> User | None:
    """The authenticated user of the innermost ``enqueued_by`` block, if any."""
    owner = _enqueued_by.get()
    if owner is not None and not getattr(owner, "is_authenticated", False):
        return None
    return owner


def call_key(task_path: str, args: Sequence[object], kwargs: Mapping[str, object]) -> str:
    """The unique key of a task call: the task and a hash of its JSON arguments."""
    payload = json.dumps(
        [list(args), kwargs], sort_keys=True, separators=(",", ":"), default=str
    ).encode()
    return f"call:{hashlib.sha256(task_path.encode() + b'|' + payload).hexdigest()}"


def build_job(
    *,
    args: Sequence[object],
    kwargs: Mapping[str, object],
    unique_key: str | None = None,
    **fields: Any,
) -> Job:
    """An unsaved Job for one task call (``fields`` as for ``job_maker``). Raises
    ``InvalidArgumentsError`` for non-JSON arguments and ``OutboundURLRefusedError`` for a
    webhook URL that may not be called."""
    return job_maker(**fields)(args, kwargs, unique_key)


JobMaker: TypeAlias = Callable[[Sequence[object], Mapping[str, object], "str | None"], Job]


def job_maker(*, now: datetime, batch_id: uuid.UUID | None = None, **fields: Any) -> JobMaker:
    """What builds unsaved Jobs for calls of one task at ``now``, from a call's arguments
    and unique key (``JobFactory(**fields).maker(now, batch_id)``). Raises
    ``OutboundURLRefusedError`` for a webhook URL that may not be called."""
    return JobFactory(**fields).maker(now, batch_id)


class JobFactory:
    """What builds unsaved Jobs of one task: what those jobs share, validated and worked out
    once (the backend keeps one per task, until the settings change), so that a call only
    adds its own values.

    The jobs are made from a copy of that shared state by ``fastpath.new_job``: filled in
    directly with the fast path on, where Django's model init would set every field and
    send ``pre_init``/``post_init``, else (or if a project connects a receiver for Job to one
    of those) by the model's own init."""

    def __init__(
        self,
        *,
        task_path: str,
        queue_name: str,
        priority: int,
        run_after: datetime | None,
        backend: str,
        options: JobOptions,
        webhook_url: str = "",
        unique_for: timedelta | None = None,
        limit_key: str = "",
        limit_concurrency: int | None = None,
        limit_rate: str = "",
        task_overrides: dict[str, JSON] | None = None,
    ) -> None:
        self.run_after = run_after
        self.webhook_url = webhook_url
        self.unique_for = unique_for
        self.max_arguments: int | None = jobs_settings.MAX_ARGUMENTS_BYTES
        shared = {
            "backend": backend,
            "task_path": task_path,
            "queue_name": queue_name,
            "priority": priority,
            **_policy_fields(options),
            "webhook_url": webhook_url,
            "limit_key": limit_key,
            "limit_concurrency": limit_concurrency if limit_key else None,
            "limit_rate": limit_rate if limit_key else "",
            "task_overrides": task_overrides,
        }
        defaults, factories = _job_defaults()
        # Every concrete field of Job by attname, in field order (update() keeps it); those a
        # call sets (``maker``) at their defaults here.
        self.values = dict(defaults)
        self.values.update(shared)
        self.direct_values = fastpath.direct_template(self.values)
        # Defaults made per job (the id, by the fast path's uuid4 where it is on), except for
        # the arguments, which every call gives.
        uuid4 = fastpath.uuid4_factory()
        self.factories = tuple(
            (attname, uuid4 if factory is uuid.uuid4 else factory)
            for attname, factory in factories
            if attname not in shared and attname not in (*_CALL_FIELDS, "args", "kwargs")
        )

    def _check_webhook(self) -> None:
        if self.webhook_url:
            outbound._secret()  # fail at enqueue, not at delivery, if no secret is configured
            outbound.validate_url(self.webhook_url)

    def maker(self, now: datetime, batch_id: uuid.UUID | None = None) -> JobMaker:
        """What builds the task's jobs enqueued at ``now`` (by the current owner, see
        ``enqueued_by``), joining ``batch_id`` if given (the caller counts them in:
        ``services.batches.jobs_added``), from a call's arguments and unique key. Raises
        ``OutboundURLRefusedError`` for a webhook URL that may not be called (checked on each
        call: its name may resolve elsewhere by now)."""
        self._check_webhook()
        due = self.run_after if self.run_after is not None else now
        owner = current_owner()
        template = fastpath.job_template(self.values, self.direct_values)
        template["status"] = JobStatus.SCHEDULED if due > now else JobStatus.QUEUED
        template["enqueued_at"] = now
        template["run_after"] = due
        template["enqueued_by_id"] = owner.pk if owner is not None else None
        template["batch_id"] = batch_id
        factories = self.factories
        max_arguments = self.max_arguments
        unique_for = self.unique_for

        def make(
            args: Sequence[object], kwargs: Mapping[str, object], unique_key: str | None = None
        ) -> Job:
            state = template.copy()
            for attname, factory in factories:
                state[attname] = factory()
            # (storable_json returns a new list or dict: copy only what it could not take)
            if type(args) is not list and type(args) is not tuple:
                args = list(args)
            stored_args, args_bound = checked_json(args, "Task arguments")
            stored_kwargs, kwargs_bound = checked_json(
                kwargs if type(kwargs) is dict else dict(kwargs), "Task keyword arguments"
            )
            state["args"], state["kwargs"] = stored_args, stored_kwargs
            if max_arguments is not None and args_bound + kwargs_bound > max_arguments:
                size = json_size(stored_args) + json_size(stored_kwargs)
                if size > max_arguments:
                    raise ArgumentsTooLargeError(size, max_arguments)
            if unique_key is not None:
                state["unique_key"] = unique_key
                state["unique_for"] = unique_for
            job = fastpath.new_job(state)
            if owner is not None:
                # (authenticated, so an instance of the user model the foreign key names)
                job.enqueued_by = owner  # type: ignore[assignment]
            return job

        return make


# The job fields each call of ``JobFactory.maker`` sets.
_CALL_FIELDS = ("status", "enqueued_at", "run_after", "enqueued_by_id", "batch_id")


IDENTITY_CACHE_SIZE = 1024


_T = TypeVar("_T")


def by_identity(
    cache: dict[tuple[Hashable, int], tuple[object, _T]],
    obj: object,
    compute: Callable[[], _T],
    scope: Hashable = None,
) -> _T:
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


_POLICY_FIELDS: dict[tuple[Hashable, int], tuple[object, dict[str, object]]] = {}


def _policy_fields(options: JobOptions) -> dict[str, object]:
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
def _job_defaults() -> tuple[dict[str, object], tuple[tuple[str, Callable[[], object]], ...]]:
    """Per concrete field of ``Job``, in order, its default by attname; and the fields whose
    default is a callable to call for each job, with that callable."""
    fields = Job._meta.concrete_fields
    return (
        {f.attname: None if callable(f.default) else f.get_default() for f in fields},
        tuple((f.attname, f.default) for f in fields if f.has_default() and callable(f.default)),
    )


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
                .filter(queue_name=name, status__in=UNSTARTED_STATUSES)
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
    # every one of them when the statistics were stale, every second, in every worker
    # (bench/HISTORY.md, "Queue depth").
    scheduled = Job.objects.using(using).filter(status=JobStatus.SCHEDULED).order_by("run_after")
    firsts = [
        (scheduled if queue is None else scheduled.filter(queue_name=queue))
        .values_list("run_after", flat=True)
        .first()
        for queue in (queues if queues is not None else [None])
    ]
    next_due = min((when for when in firsts if when is not None), default=None)
    return moved, next_due
