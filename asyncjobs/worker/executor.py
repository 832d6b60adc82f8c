"""Running one claimed job: call the task outside any transaction, then record the outcome
in one short transaction."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
)

from asyncjobs import db, services
from asyncjobs.backend import JobContext, JobsBackend
from asyncjobs.exceptions import (
    JobCancelled,
    JobTimeoutError,
    OutcomeNotStoredError,
    ResultNotSerializableError,
    TaskImportError,
    TransactionLeftOpenError,
)
from asyncjobs.models import AttemptOutcome, Job, JobStatus
from asyncjobs.tasks_api import Task, TaskResult, TaskResultStatus, task_finished, task_started
from asyncjobs.text import safe_text
from asyncjobs.worker.completer import Completer, Pending
from asyncjobs.worker.recovery import (
    Refusals,
    close_broken_connections,
    end_open_transactions,
    open_transactions,
)

if TYPE_CHECKING:  # (slots imports this module: the slot threads run executors)
    from asyncjobs.worker.eventloop import EventLoop
    from asyncjobs.worker.slots import Execution

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Executor.run's answer when a success was handed to the Completer, to be recorded in a batch.
PENDING = "pending"


class Executor:
    """Runs claimed jobs for one worker and records their attempts."""

    def __init__(
        self,
        backend: JobsBackend,
        worker_id: str,
        *,
        clock: Clock,
        record_timeout: timedelta = timedelta(seconds=60),
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.clock = clock
        # How long to keep retrying the write of an outcome while the database is away; after
        # that the lease will have expired and another worker reruns the job.
        self.record_timeout = record_timeout
        # Set by the worker: successes then go to it and are recorded in batches.
        self.completer: Completer | None = None
        # Set by the worker: async tasks then run on its one event loop (else each on an
        # event loop of its own, asyncio.run, in the calling thread).
        self.loop: EventLoop | None = None
        # Set by the worker: a task refused a database connection gives its attempt back
        # unspent and the worker backs off (else the refusal is the attempt's failure).
        self.refusals: Refusals | None = None

    def run(self, execution: Execution) -> JobStatus | str | None:
        """Run the job, record the outcome, send ``task_finished`` if the job ended.

        Returns the job's new status, None if the attempt was no longer ours to record
        (timed out by the watchdog, or rescued after a lost lease), or ``PENDING`` when a
        success was handed to the ``Completer`` (which reports back when it is recorded).
        """
        job = execution.job
        started = time.monotonic()
        execution.started_at = self.clock()
        try:
            task = self.backend.load_task(job)
        except TaskImportError as exc:
            logger.error("Job %s: %s", job.pk, exc, extra=self._extra(job, outcome="failed"))
            return self._record(job, exc, AttemptOutcome.FAILED, None, execution=execution)
        except BaseException as exc:  # importing the task's module ran code that raised
            return self._record(job, exc, AttemptOutcome.FAILED, None, execution=execution)
        if execution.cancel_requested():
            # Cancelled while it waited in the worker's prefetch buffer: never start it.
            status = self._record(
                job,
                JobCancelled("cancelled before it started"),
                AttemptOutcome.CANCELLED,
                None,
                execution=execution,
            )
            self.report(job, task, status, started)
            return status
        try:
            sender = type(self.backend)
            announce = services.observed(task_started, sender, logging.INFO)
            result = self._running_result(job, task) if announce or task.takes_context else None
            if announce:
                task_started.send(sender, task_result=result)
            already_open = open_transactions()
            try:
                value = self._call(task, job, result, execution)
            finally:
                left = self._end_transactions(job, already_open)
            if left:
                raise TransactionLeftOpenError(
                    f"Task {job.task_path} returned inside a database transaction it did not "
                    f"end (database {', '.join(left)}): rolled back, so what it wrote there is "
                    "lost"
                )
        except JobCancelled as exc:
            status = self._record(job, exc, AttemptOutcome.CANCELLED, None, execution=execution)
        except ResultNotSerializableError as exc:
            # Running it again would return the same kind of value: fail at once.
            status = self._record(job, exc, AttemptOutcome.FAILED, None, False, execution=execution)
        except JobTimeoutError as exc:
            status = self._record(job, exc, AttemptOutcome.TIMED_OUT, None, execution=execution)
        except BaseException as exc:
            if self.refusals is not None and db.is_too_many_connections(exc):
                # The database is full, which says nothing about this job.
                return self._give_back(job, exc)
            # Task code may raise anything: SystemExit, KeyboardInterrupt, GeneratorExit, a
            # CancelledError of its own. Each is this attempt's failure, never the slot's.
            # (The watchdog's own interruptions are JobTimeoutError and WorkerMemoryError,
            # caught above or recorded already.)
            status = self._record(job, exc, AttemptOutcome.FAILED, None, execution=execution)
        else:
            if self.completer is not None:
                self.completer.submit(Pending(execution, task, value, self.clock(), started))
                return PENDING
            status = self.record_success(job, value, execution)
        self.report(job, task, status, started)
        return status

    def _end_transactions(self, job: Job, already_open: set[str]) -> list[str]:
        """Roll back what the task left open on this thread's connections (see
        ``end_open_transactions``), saying so in the log."""
        left = end_open_transactions(already_open)
        if left:
            logger.warning(
                "Job %s: task %s left a transaction open on %s; rolled back and closed",
                job.pk,
                job.task_path,
                ", ".join(left),
                extra=self._extra(job),
            )
        return left

    def _give_back(self, job: Job, error: BaseException) -> JobStatus | None:
        """Release an attempt whose task was refused a database connection: recorded as lost,
        not counted against ``max_attempts``, the job due again once the worker's backoff
        has passed. Logged through ``Refusals`` (once per interval for the whole worker)."""
        assert self.refusals is not None
        delay = self.refusals.refused(error, f"running job {job.pk} ({job.task_path})")
        released = self.with_db_retry(
            job,
            lambda: services.release_jobs(
                [job],
                worker_id=self.worker_id,
                now=self.clock(),
                error=error,
                delay=timedelta(seconds=delay),
            ),
        )
        return JobStatus(job.status) if released else None

    def report(self, job: Job, task: Task | None, status: JobStatus | None, started: float) -> None:
        """Log the outcome of an attempt and send ``task_finished`` if the job ended."""
        duration = time.monotonic() - started
        if status is None:
            logger.warning(
                "Job %s attempt %d finished after its attempt was closed elsewhere (timeout or "
                "rescue); outcome discarded",
                job.pk,
                job.attempts,
                extra=self._extra(job, duration=duration),
            )
            return
        level = logging.INFO if status == JobStatus.SUCCEEDED else logging.WARNING
        if logger.isEnabledFor(level):  # (a disabled level should not pay for the extras)
            logger.log(
                level,
                "Job %s %s attempt %d -> %s in %.3fs",
                job.pk,
                job.task_path,
                job.attempts,
                status,
                duration,
                extra=self._extra(job, outcome=status, duration=duration),
            )
        if task is not None and status in TERMINAL:
            self._send_finished(job, task)

    def _call(self, task: Task, job: Job, result: TaskResult | None, execution: Execution) -> Any:
        args: list[Any] = list(job.args)
        if task.takes_context:
            assert result is not None
            context = JobContext(
                task_result=result,
                job_id=str(job.pk),
                database=self.backend.database,
                cancel_event=execution.cancel_event,
                attempt_data=execution.attempt_data,
                batch_id=str(job.batch_id) if job.batch_id is not None else None,
            )
            args.insert(0, context)
        if inspect.iscoroutinefunction(task.func):
            return self._run_coroutine(self._call_async(task, job, args))
        value = task.func(*args, **job.kwargs)
        if inspect.isawaitable(value):
            # A sync function that returned a coroutine: run it like an async task.
            return self._run_coroutine(self._await(value, job))
        return self._mark_result(value, job)

    def _run_coroutine(self, coroutine: Any) -> Any:
        if self.loop is not None:
            return self.loop.run(coroutine)
        return asyncio.run(coroutine)

    async def _call_async(self, task: Task, job: Job, args: list[Any]) -> Any:
        return await self._await(task.func(*args, **job.kwargs), job)

    async def _await(self, awaitable: Any, job: Job) -> Any:
        timeout = job.timeout.total_seconds() if job.timeout else None
        try:
            value = await asyncio.wait_for(awaitable, timeout)
        except TimeoutError as exc:
            raise JobTimeoutError(
                f"Attempt {job.attempts} ran past its timeout of {timeout} s"
            ) from exc
        return self._mark_result(value, job)

    @staticmethod
    def _mark_result(value: Any, job: Job) -> Any:
        """The return value as JSON; ``ResultNotSerializableError`` if it is not JSON,
        ``ResultTooLargeError`` (a subclass) if it is larger than ``MAX_RESULT_BYTES``."""
        try:
            stored, bound = services.storable_json_sized(value)
        except (TypeError, ValueError, RecursionError) as exc:  # (too deep to encode)
            raise ResultNotSerializableError(
                f"Task {job.task_path} returned a value that is not JSON-serializable: {exc}"
            ) from exc
        services.check_result_size(stored, bound, job.task_path)
        return stored

    def _first_attempt_result(self, job: Job, task: Task) -> TaskResult:
        """The result of a job on its first attempt: the history is just this attempt, so
        nothing needs reading back."""
        result = self.backend.to_result(job, task=task, attempts=[])
        result.worker_ids.append(self.worker_id)
        return result

    def _running_result(self, job: Job, task: Task) -> TaskResult:
        if job.attempts <= 1:
            result = self._first_attempt_result(job, task)
        else:
            result = self.backend.to_result(job, task=task)
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        return result

    def record_success(self, job: Job, value: Any, execution: Execution) -> JobStatus | None:
        """Record one successful attempt whose return value is ``value`` (JSON already).

        Returns SUCCEEDED, None if the attempt was no longer ours, or the failure recorded
        instead when the database refused the value (``OutcomeNotStoredError``, not retried).
        """

        def not_stored(problem: Exception) -> JobStatus | None:
            # Running the task again would return the same value: fail at once.
            error = OutcomeNotStoredError(f"the task's return value could not be stored: {problem}")
            return self._record(job, error, AttemptOutcome.FAILED, "", False, execution=execution)

        ok = self.with_db_retry(
            job,
            lambda: services.record_success(
                job,
                worker_id=self.worker_id,
                return_value=value,
                now=self.clock(),
                http_status=execution.attempt_data.get("http_status"),
                started_at=execution.started_at,
            ),
            on_data_error=not_stored,
        )
        if isinstance(ok, JobStatus):  # the failure recorded instead
            return ok
        return JobStatus.SUCCEEDED if ok else None

    def _record(
        self,
        job: Job,
        error: BaseException,
        outcome: AttemptOutcome,
        traceback_text: str | None,
        retryable: bool | None = None,
        *,
        execution: Execution | None = None,
    ) -> JobStatus | None:
        http_status = execution.attempt_data.get("http_status") if execution else None
        started_at = execution.started_at if execution else None

        def write(
            error: BaseException, traceback_text: str | None, http_status: int | None
        ) -> JobStatus | None:
            return services.record_failure(
                job,
                worker_id=self.worker_id,
                error=error,
                now=self.clock(),
                outcome=outcome,
                traceback_text=traceback_text,
                retryable=retryable,
                http_status=http_status,
                started_at=started_at,
            )

        def not_stored(problem: Exception) -> JobStatus | None:
            # The bare facts, which every database stores, in place of what it refused.
            stand_in = OutcomeNotStoredError(
                f"{services.error_fields(error, '')['error_class']} could not be stored as "
                f"raised: {problem}"
            )
            return write(stand_in, "", None)

        return self.with_db_retry(
            job, lambda: write(error, traceback_text, http_status), on_data_error=not_stored
        )

    def with_db_retry(
        self,
        job: Job,
        write: Callable[[], Any],
        *,
        on_data_error: Callable[[Exception], Any] | None = None,
    ) -> Any:
        """Run ``write``; while the database is unreachable, reconnect and retry with backoff.

        Gives up after ``record_timeout``: by then the lease has expired and the job will be
        rescued and run again, so nothing is lost (at-least-once). A data error (the
        database refused what was written, which no retry changes) is not retried: it is
        logged and ``on_data_error(error)`` writes a stand-in once (None if there is none).
        """
        delay, give_up = 0.2, time.monotonic() + self.record_timeout.total_seconds()
        while True:
            try:
                return write()
            except DATA_ERRORS as exc:
                logger.error(
                    "Job %s: the database refused the attempt's outcome (%s: %s)",
                    job.pk,
                    type(exc).__name__,
                    safe_text(exc, 500),
                    extra=self._extra(job),
                )
                if on_data_error is None:
                    return None
                problem = f"{type(exc).__name__}: {safe_text(exc, 500)}"
                fallback, on_data_error = on_data_error, None
                write = functools.partial(fallback, RuntimeError(problem))
            except (DatabaseError, InterfaceError) as exc:
                if time.monotonic() > give_up:
                    logger.error(
                        "Job %s: could not record the outcome (%s); it will be rescued",
                        job.pk,
                        exc,
                        extra=self._extra(job),
                    )
                    return None
                if self.refusals is not None and db.is_too_many_connections(exc):
                    self.refusals.refused(exc, "recording outcomes")
                else:
                    logger.warning(
                        "Job %s: database error while recording (%s); retrying in %.1fs",
                        job.pk,
                        exc,
                        delay,
                        extra=self._extra(job),
                    )
                close_broken_connections()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _send_finished(self, job: Job, task: Task) -> None:
        # (Django logs a failed or cancelled job's end as an error, a success as info.)
        level = logging.INFO if job.status == JobStatus.SUCCEEDED else logging.ERROR
        if not services.observed(task_finished, type(self.backend), level):
            return
        try:
            if job.attempts <= 1 and job.status == JobStatus.SUCCEEDED:
                result = self._first_attempt_result(job, task)
            else:
                job.refresh_from_db(using=self.backend.database)
                result = self.backend.to_result(job, task=task)
        except DatabaseError:
            logger.exception("Job %s: could not load the result for task_finished", job.pk)
            return
        task_finished.send(type(self.backend), task_result=result)

    def _extra(self, job: Job, **more: Any) -> dict[str, Any]:
        return {
            "job_id": str(job.pk),
            "task": job.task_path,
            "attempt": job.attempts,
            "queue": job.queue_name,
            "worker_id": self.worker_id,
            **more,
        }


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


# What a write of an outcome can fail with that says the data, not the connection, is at
# fault: retrying the same write cannot help. (Drivers raise ValueError or TypeError for
# values they cannot send, such as text that does not encode.)
DATA_ERRORS = (
    DataError,
    IntegrityError,
    ProgrammingError,
    NotSupportedError,
    ValueError,
    TypeError,
)
