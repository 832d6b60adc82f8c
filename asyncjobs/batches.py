"""Batches: a group of jobs, with callbacks once they have all finished.

::

    from asyncjobs import batch

    with batch(on_success=notify_done.using(queue_name="emails"), on_complete=cleanup,
               description="Import 2026-12") as b:
        for row_ids in chunks:
            b.enqueue(import_rows, row_ids)        # or b.enqueue_many([...])
    # sealed here, in the same transaction as the jobs: the callbacks fire once all are done

The ``with`` block is a transaction (``transaction.atomic``, a savepoint inside another
one): the batch, its jobs and its seal commit together, or, on an exception, none of them.

Without ``with``, ``b = batch(...)`` is created by its first ``enqueue`` (or ``b.id``), in
the caller's transaction if there is one, and stays open, its callbacks waiting, until
``b.seal()``: an unsealed batch never fires. (Sealing at the caller's commit would need a
hook that runs after the commit, which a crash can skip; an explicit seal cannot be lost.)

A job of the batch can add jobs to it (child jobs) while it runs, through
``current_batch(context)``: the batch cannot finish meanwhile, since the running job is
still pending.

Callbacks are tasks of the batch's backend, enqueued in the transaction that finishes the
batch, once each in the batch's life, and called as ``task(batch_id, summary)``:
``summary`` is ``{"state", "description", "total", "succeeded", "failed", "cancelled"}``.
``on_complete`` fires when every job has finished, ``on_success`` when they all succeeded,
``on_failure`` when some failed or were cancelled. Retrying a failed job of a finished batch
reopens it; if every job then succeeds, ``on_success`` fires (unless it fired before).
"""

import sys
import uuid
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from asyncjobs import services
from asyncjobs.backend import JobContext, JobsBackend
from asyncjobs.exceptions import BatchNotFoundError
from asyncjobs.models import Batch
from asyncjobs.tasks_api import DEFAULT_TASK_BACKEND_ALIAS, Task, TaskResult, task_backends

Call = tuple[Task, Sequence[Any], dict[str, Any]]


class batch:
    """A batch of jobs: a context manager, or a handle on an existing batch.

    Parameters:
        on_success: a task (or ``task.using(...)``) enqueued once every job succeeded.
        on_complete: a task enqueued once every job finished, whatever its end.
        on_failure: a task enqueued once every job finished, if some failed or were
            cancelled.
        description: shown by the admin and the API (at most 255 characters).
        webhook_url: where to POST the signed notice of the batch's end (as a job's
            webhook: the same URL checks, timeouts and size limits), at each finish.
        backend: the ``TASKS`` alias of the batch and of all its jobs and callbacks.
    """

    def __init__(
        self,
        *,
        on_success: Task | None = None,
        on_complete: Task | None = None,
        on_failure: Task | None = None,
        description: str = "",
        webhook_url: str = "",
        backend: str = DEFAULT_TASK_BACKEND_ALIAS,
    ) -> None:
        self.backend_alias = backend
        self.description = description
        self.webhook_url = webhook_url or ""
        self._callbacks = {
            name: task
            for name, task in (
                ("on_success", on_success),
                ("on_complete", on_complete),
                ("on_failure", on_failure),
            )
            if task is not None
        }
        self._id: uuid.UUID | None = None
        self._atomic: Any = None

    @classmethod
    def _of(cls, record: Batch) -> "batch":
        handle = cls(description=record.description, backend=record.backend)
        handle.webhook_url = record.webhook_url
        handle._id = record.pk
        return handle

    @property
    def backend(self) -> JobsBackend:
        """The asyncjobs backend the batch belongs to."""
        backend = task_backends[self.backend_alias]
        if not isinstance(backend, JobsBackend):
            raise TypeError(f"A batch needs an asyncjobs backend, not {type(backend).__name__}.")
        return backend

    @property
    def using(self) -> str:
        """The database alias holding the batch."""
        return self.backend.database

    @property
    def id(self) -> str:
        """The batch's id (creating the batch, open, if it does not exist yet)."""
        return str(self._ensure())

    def _ensure(self) -> uuid.UUID:
        if self._id is None:
            self._create(sealed=False)
        assert self._id is not None
        return self._id

    def _create(self, *, sealed: bool) -> None:
        backend = self.backend
        specs = {}
        for name, task in self._callbacks.items():
            if not isinstance(task, Task):
                raise TypeError(f"{name} must be a task (decorated with @task), not {task!r}.")
            self._check_backend(task, name)
            specs[name] = services.callback_spec(backend._task_fields(task))
        record = services.create_batch(
            using=backend.database,
            backend=self.backend_alias,
            now=timezone.now(),
            description=self.description,
            callbacks=specs,
            webhook_url=self.webhook_url,
            sealed=sealed,
        )
        self._id = record.pk

    def _check_backend(self, task: Task, what: str) -> None:
        if task.backend != self.backend_alias:
            raise ValueError(
                f"{what}: task {task.module_path} uses backend {task.backend!r}, the batch "
                f"{self.backend_alias!r}."
            )

    def __enter__(self) -> "batch":
        if self._id is not None or self._atomic is not None:
            raise RuntimeError("This batch exists already; a with block creates a new one.")
        self._atomic = transaction.atomic(using=self.using)
        self._atomic.__enter__()
        try:
            self._create(sealed=False)
        except BaseException:
            self._leave(*sys.exc_info())
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self.seal()
            except BaseException:
                self._leave(*sys.exc_info())
                raise
        self._leave(exc_type, exc, traceback)
        if exc_type is not None:
            self._id = None  # rolled back: the batch does not exist

    def _leave(self, *exc_info: Any) -> None:
        atomic, self._atomic = self._atomic, None
        atomic.__exit__(*exc_info)

    def enqueue(self, task: Task, *args: Any, **kwargs: Any) -> TaskResult:
        """Enqueue one call of ``task`` into the batch, as ``task.enqueue(*args, **kwargs)``
        would. Raises ``BatchClosedError``, storing nothing, if the batch has finished."""
        return self.enqueue_many([(task, args, kwargs)])[0]

    def enqueue_many(self, calls: Iterable[Call]) -> list[TaskResult]:
        """Enqueue many ``(task, args, kwargs)`` calls into the batch in one statement
        (``COPY`` on PostgreSQL), all or none, as ``asyncjobs.enqueue_many``; the batch's
        counts change in the same transaction. Raises ``BatchClosedError``, storing nothing,
        if the batch has finished."""
        calls = list(calls)
        for task, _, _ in calls:
            self._check_backend(task, "enqueue")
        if not calls:
            return []
        batch_id = self._ensure()
        return self.backend.enqueue_many(calls, batch_id=batch_id)

    def seal(self) -> bool:
        """Seal the batch: its callbacks fire once all its jobs have finished (at once if it
        has none). Jobs may still be added by its own running jobs. Returns False if it was
        sealed already."""
        return services.seal_batch(self._ensure(), using=self.using, now=timezone.now())

    def refresh(self) -> Batch:
        """The batch's row as it is now (counts, ``state``, ``percent``, times). Raises
        ``BatchNotFoundError`` for a batch not created yet, or rolled back."""
        record = (
            None
            if self._id is None
            else Batch.objects.using(self.using).counted().filter(pk=self._id)
        )
        found = record.first() if record is not None else None
        if found is None:
            raise BatchNotFoundError(f"Batch {self._id or '(not created)'} does not exist.")
        return found

    def __repr__(self) -> str:
        return f"<batch {self._id or '(not created)'} {self.description!r}>"


def get_batch(batch_id: uuid.UUID | str, *, backend: str = DEFAULT_TASK_BACKEND_ALIAS) -> batch:
    """A handle on an existing batch: ``.refresh()`` reads its counts, ``.enqueue`` adds jobs,
    ``.seal()`` seals it. Raises ``BatchNotFoundError`` for an unknown id."""
    handle = batch(backend=backend)
    try:
        record = Batch.objects.using(handle.using).counted().get(pk=batch_id)
    except (Batch.DoesNotExist, ValidationError, ValueError, TypeError) as exc:
        raise BatchNotFoundError(f"No batch with id {batch_id!r}.") from exc
    return batch._of(record)


def current_batch(context: JobContext) -> batch | None:
    """The batch of the running job whose ``context`` this is (a task declared with
    ``takes_context=True``), or None: ``current_batch(context).enqueue(...)`` adds a child
    job to it."""
    batch_id = getattr(context, "batch_id", None)
    if batch_id is None:
        return None
    return get_batch(batch_id, backend=context.task_result.backend)
