"""``JobsBackend``: asyncjobs as a ``django.tasks`` backend.

Configure it in settings::

    TASKS = {
        "default": {
            "BACKEND": "asyncjobs.backend.JobsBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"DATABASE": "default"},
        }
    }

and declare tasks with Django's decorator. The backend's ``task_class`` accepts the retry
options Django's ``Task`` does not have, so both ``@task(...)`` and ``.using(...)`` take them::

    @task(queue_name="emails", priority=10, max_attempts=5, timeout=30)
    def send_welcome_email(user_id): ...
"""

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string

from asyncjobs import services
from asyncjobs.conf import as_timedelta, parse_rate
from asyncjobs.exceptions import ConfigurationError, TaskImportError
from asyncjobs.models import DependencyPolicy, Job, JobStatus
from asyncjobs.overrides import apply_overrides, task_overrides
from asyncjobs.task import JobContext as JobContext
from asyncjobs.task import JobTask as JobTask
from asyncjobs.tasks_api import (
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    task_backends,
    task_enqueued,
)

# Per (backend alias, task): what builds the task's jobs; see JobsBackend._task_jobs.
_TASK_FIELDS: dict[Any, tuple[Any, Any]] = {}


@receiver(setting_changed)
def _forget_task_fields(**kwargs: Any) -> None:
    _TASK_FIELDS.clear()


# Per (backend alias, queue, priority, task path) and imported object: the Task a job of
# them runs; see JobsBackend.load_task.
_LOADED_TASKS: dict[Any, tuple[Any, Any]] = {}

# What builds a task's unsaved jobs from a call's arguments (JobsBackend.job_maker).
BuildJob = Callable[[Sequence[Any], dict[str, Any]], Job]


@dataclass(frozen=True, slots=True)
class _TaskJobs:
    """What builds the jobs of one task (``JobsBackend._task_jobs``): the fields its jobs
    share (``fields``, read only), its ``JobFactory`` of them, and each job's unique key:
    ``unique_key`` (None: not unique), or, for a task that is unique by its arguments, made
    from ``call_key_path`` (the task's path) and the call's arguments."""

    fields: dict[str, Any]
    factory: services.JobFactory
    unique_key: str | None
    call_key_path: str | None


def _clone(task: Task, changes: dict[str, Any]) -> Task:
    """A copy of ``task`` with ``changes``, not validated again: a job's queue or priority
    may no longer be in the settings, and that must not hide the job's result."""
    clone = object.__new__(type(task))
    for name in task.__dataclass_fields__:
        object.__setattr__(clone, name, changes.get(name, getattr(task, name)))
    return clone


def _options(task: Task) -> services.JobOptions:
    if isinstance(task, JobTask):
        return task.options()
    return services.resolve_options(task.queue_name)


class JobsBackend(BaseTaskBackend):
    """Stores tasks as ``Job`` rows for ``manage.py runworker`` to run.

    ``OPTIONS``: ``DATABASE``, the database alias holding the jobs (default ``"default"``).
    """

    task_class = JobTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database: str = self.options.get("DATABASE", "default")

    def validate_task(self, task: Task) -> None:
        """Django's checks, plus the task's asyncjobs options."""
        priority = task.priority
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidTask(
                f"priority must be an integer from {TASK_MIN_PRIORITY} to {TASK_MAX_PRIORITY}, "
                f"not {priority!r}."
            )
        super().validate_task(task)
        try:
            _options(task)
            parse_rate(getattr(task, "rate_limit", None))
        except (ConfigurationError, ValueError) as exc:
            raise InvalidTask(str(exc)) from exc
        cap = getattr(task, "concurrency_limit", None)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise InvalidTask(f"concurrency_limit must be an integer >= 1, got {cap!r}.")
        policy = getattr(task, "on_dependency_failure", None)
        if policy is not None and policy not in DependencyPolicy.values:
            raise InvalidTask(
                f"on_dependency_failure must be one of {DependencyPolicy.values}, not {policy!r}."
            )

    def _task_jobs(self, task: Task) -> "_TaskJobs":
        """What builds the jobs of ``task``, for ``job_maker`` (validates the task).

        Remembered per task object (tasks are immutable; ``using()`` makes a new one) until
        the settings change, so a task is validated, its options resolved and what its jobs
        share laid out once, not on every enqueue."""
        return services.by_identity(
            _TASK_FIELDS, task, lambda: self._resolve_task_jobs(task), scope=self.alias
        )

    def _task_fields(self, task: Task) -> dict[str, Any]:
        """What every job of ``task`` shares (validates the task; remembered as
        ``_task_jobs``). Not to be modified."""
        return self._task_jobs(task).fields

    def _resolve_task_jobs(self, task: Task) -> "_TaskJobs":
        fields = self._resolve_task_fields(task)
        factory = services.JobFactory(**fields)
        unique_key = getattr(task, "unique_key", None)
        if unique_key is not None or not getattr(task, "unique", None):
            return _TaskJobs(fields, factory, unique_key, None)
        return _TaskJobs(fields, factory, None, task.module_path)

    def _resolve_task_fields(self, task: Task) -> dict[str, Any]:
        self.validate_task(task)
        return {
            "task_path": task.module_path,
            "queue_name": task.queue_name,
            "priority": task.priority,
            "run_after": task.run_after,
            "backend": self.alias,
            "options": _options(task),
            "webhook_url": getattr(task, "webhook_url", None) or "",
            "unique_for": as_timedelta(getattr(task, "unique_for", None)),
            "task_overrides": self._overrides(task),
            **self._limits(task),
        }

    @staticmethod
    def _overrides(task: Task) -> dict[str, Any] | None:
        """What ``.using()`` changed on ``task`` against the task its path imports to."""
        try:
            base = import_string(task.module_path)
        except ImportError:
            base = None
        if base is task:
            return None
        return task_overrides(task, base if isinstance(base, Task) else None)

    def build_job(
        self, task: Task, args: Sequence[Any], kwargs: dict[str, Any], now: datetime
    ) -> Job:
        """An unsaved job for one call of ``task`` (validates the task and the arguments)."""
        return self.job_maker(task, now)(args, kwargs)

    def job_maker(self, task: Task, now: datetime, batch_id: Any = None) -> BuildJob:
        """What builds unsaved jobs for calls of ``task`` at ``now``, from a call's
        arguments; the task is validated, and what its jobs share worked out, once. The
        jobs join ``batch_id`` if given."""
        jobs = self._task_jobs(task)
        make = jobs.factory.maker(now, batch_id)
        path = jobs.call_key_path
        if path is None:
            unique_key = jobs.unique_key
            return lambda args, kwargs: make(args, kwargs, unique_key)
        return lambda args, kwargs: make(args, kwargs, services.call_key(path, args, kwargs))

    @staticmethod
    def _limits(task: Task) -> dict[str, Any]:
        """The limit fields of a job of ``task``: per key if it has one, else per task."""
        key = getattr(task, "concurrency_key", None)
        rate = getattr(task, "rate_limit", None) or ""
        cap = getattr(task, "concurrency_limit", None)
        if key:
            return {"limit_key": f"key:{key}", "limit_concurrency": cap or 1, "limit_rate": rate}
        if rate or cap:
            return {
                "limit_key": f"task:{task.module_path}",
                "limit_concurrency": cap,
                "limit_rate": rate,
            }
        return {}

    @staticmethod
    def requirement(task: Task) -> services.Requirement | None:
        """What a job of ``task`` waits for (``depends_on``), or None."""
        parents = getattr(task, "depends_on", None)
        if not parents:
            return None
        return services.Requirement(
            parents=services.parse_ids(parents),
            on_failure=getattr(task, "on_dependency_failure", None) or DependencyPolicy.CANCEL,
        )

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> TaskResult:
        """Store one job in the current transaction and return its result handle.

        Raises ``InvalidArgumentsError`` (a ``TypeError``), storing nothing, if the arguments
        are not JSON-serializable, and ``JobNotFoundError`` if a job in ``depends_on`` does
        not exist.
        """
        return self.enqueue_job(task, args, kwargs, self.requirement(task), timezone.now())

    def enqueue_job(
        self,
        task: Task,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        need: services.Requirement | None,
        now: datetime,
    ) -> TaskResult:
        """``enqueue``, with what the job waits for given (``need``; chains give theirs)."""
        job = self.build_job(task, args, kwargs, now)
        if need is None:
            stored = services.enqueue_jobs([job], using=self.database, now=now)[0]
        else:
            stored = services.retry_deadlocks(
                lambda: services.enqueue_dependents([(job, need)], using=self.database, now=now),
                using=self.database,
                what="enqueue with depends_on",
                restore=services.restorer([job]),
            )[0]
        if stored is not job:  # a unique job already holds the key
            return self.to_result(stored)
        result = self.to_result(job, task=task, attempts=[])
        if services.observed(task_enqueued, type(self), logging.DEBUG):
            task_enqueued.send(type(self), task_result=result)
        return result

    def enqueue_many(
        self,
        calls: Iterable[tuple[Task, Sequence[Any], dict[str, Any]]],
        *,
        batch_id: Any = None,
    ) -> list[TaskResult]:
        """Store many jobs in one statement, all or none; see ``asyncjobs.enqueue_many``.
        With ``batch_id``, the jobs join that batch, counted in by the same transaction
        (``BatchClosedError``, storing nothing, if it has finished)."""
        calls = list(calls)  # (it holds the tasks: their ids stay theirs meanwhile)
        now = timezone.now()
        # Per task object, validated before anything is written: what builds its jobs.
        makers: dict[int, BuildJob] = {}
        queues = set()
        for task, _, _ in calls:
            if id(task) not in makers:
                makers[id(task)] = self.job_maker(task, now, batch_id)
                queues.add(task.queue_name)
        pairs: list[tuple[Task, Job]] = []

        def jobs() -> Iterator[Job]:  # built while the ones before are being written
            for task, args, kwargs in calls:
                job = makers[id(task)](args, kwargs)
                pairs.append((task, job))
                yield job

        needs = {id(task): self.requirement(task) for task, _, _ in calls}

        dependent = any(needs.values())
        if dependent:  # built first: the parents are locked before any write
            for _ in jobs():  # (fills ``pairs``)
                pass

        def store() -> list[Job]:
            if dependent:
                return services.enqueue_dependents(
                    [(job, needs[id(task)]) for task, job in pairs],
                    using=self.database,
                    now=now,
                    queues=queues,
                )
            return services.enqueue_jobs(jobs(), using=self.database, now=now, queues=queues)

        def store_in_batch() -> list[Job]:
            stored = store()
            # A unique call answered by an existing job adds nothing to the batch.
            added = [kept for (_, job), kept in zip(pairs, stored, strict=True) if kept is job]
            services.jobs_added(batch_id, len(added), using=self.database)
            # A dependent stored cancelled (its parent had already failed) ends at once.
            ended = sum(job.status == JobStatus.CANCELLED for job in added)
            if ended:
                services.jobs_ended(
                    {batch_id: services.Ended(cancelled=ended)}, using=self.database, now=now
                )
            return stored

        run = store if batch_id is None else store_in_batch
        if dependent:
            # The parents' locks may cross a cascade (see services.deadlocks).
            stored = services.retry_deadlocks(
                run,
                using=self.database,
                what="enqueue with depends_on",
                restore=services.restorer(job for _, job in pairs),
            )
        elif batch_id is None:
            stored = run()
        else:
            with transaction.atomic(using=self.database):
                stored = run()
        announce = services.observed(task_enqueued, type(self), logging.DEBUG)
        results = []
        for (task, job), kept in zip(pairs, stored, strict=True):
            if kept is job:
                result = self.to_result(job, task=task, attempts=[])
                if announce:
                    task_enqueued.send(type(self), task_result=result)
            else:
                result = self.to_result(kept)
            results.append(result)
        return results

    def get_result(self, result_id: str) -> TaskResult:
        """The current state of a job. Raises ``TaskResultDoesNotExist`` for unknown ids."""
        try:
            job = Job.objects.using(self.database).get(pk=result_id)
        except (Job.DoesNotExist, ValidationError, ValueError, TypeError) as exc:
            raise TaskResultDoesNotExist(result_id) from exc
        return self.to_result(job)

    def load_task(self, job: Job) -> Task:
        """The ``Task`` a job runs, with the job's queue and priority.

        Raises ``TaskImportError`` if the task path no longer imports to a task.
        """
        try:
            imported = import_string(job.task_path)
        except ImportError as exc:
            raise TaskImportError(f"Task {job.task_path!r} could not be imported: {exc}") from exc
        # The same imported object with the same queue and priority gives the same task
        # (frozen), so a worker builds it once, not once per job.
        return services.by_identity(
            _LOADED_TASKS,
            imported,
            lambda: self._job_task(imported, job),
            scope=(self.alias, job.queue_name, job.priority, job.task_path),
        )

    def _job_task(self, task: Any, job: Job) -> Task:
        internal = getattr(task, "asyncjobs_internal", None)
        if internal is not None and callable(task):
            # A task asyncjobs enqueues itself (callbacks, webhooks): no decorator-time backend.
            template = object.__new__(JobTask)
            values = {
                name: None if f.default is MISSING else f.default
                for name, f in JobTask.__dataclass_fields__.items()
            }
            values.update(
                func=task,
                takes_context=internal["takes_context"],
                queue_name=job.queue_name,
                backend=self.alias,
            )
            for name, value in values.items():
                object.__setattr__(template, name, value)
            task = template
        if not isinstance(task, Task):
            raise TaskImportError(
                f"{job.task_path!r} is not a task (decorate the function with @task)."
            )
        return _clone(
            task, {"priority": job.priority, "queue_name": job.queue_name, "backend": self.alias}
        )

    def to_result(
        self, job: Job, *, task: Task | None = None, attempts: list[Any] | None = None
    ) -> TaskResult:
        """A ``TaskResult`` for ``job``; reads its attempts unless given."""
        if attempts is None:
            attempts = (
                list(
                    job.attempt_set.order_by("number").only("worker_id", "error_class", "traceback")
                )
                if job.attempts
                else []
            )
        if task is None:
            task = self.load_task(job)
            if job.task_overrides:
                task = apply_overrides(task, job.task_overrides, _clone)
        errors = [
            TaskError(exception_class_path=a.error_class, traceback=a.traceback)
            for a in attempts
            if a.error_class
        ]
        worker_ids = [a.worker_id for a in attempts]
        return services.task_result(
            job, task=task, backend=self.alias, errors=errors, worker_ids=worker_ids
        )

    def check(self, **kwargs: Any) -> list[Any]:
        """System checks for this backend (see ``asyncjobs.checks``)."""
        from asyncjobs.checks import check_backend

        return check_backend(self)


def enqueue_many(
    calls: Iterable[tuple[Task, Sequence[Any], dict[str, Any]]],
) -> list[TaskResult]:
    """Enqueue many task calls in one statement (``COPY`` on PostgreSQL for large batches)
    and return their results, in order.

    ``calls`` yields ``(task, args, kwargs)`` tuples; the tasks may differ but must share one
    asyncjobs backend. All jobs are stored or none is: one invalid call (a non-JSON argument,
    an unknown queue, a full queue) raises and nothing is written. Unique calls whose key is
    held by an existing job, or by an earlier call in the same batch, return that job.
    """
    calls = list(calls)
    if not calls:
        return []
    aliases = {task.backend for task, _, _ in calls}
    if len(aliases) != 1:
        raise ValueError(f"enqueue_many needs tasks of one backend, got {sorted(aliases)}.")
    backend = task_backends[aliases.pop()]
    if not isinstance(backend, JobsBackend):
        raise TypeError(f"enqueue_many needs an asyncjobs backend, not {type(backend).__name__}.")
    return backend.enqueue_many(calls)
