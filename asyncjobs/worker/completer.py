"""Recording successful attempts in batches, on a thread of its own (group commit)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections

from asyncjobs import services
from asyncjobs.models import JobStatus
from asyncjobs.tasks_api import Task
from asyncjobs.worker.recovery import close_broken_connections

if TYPE_CHECKING:  # (the executor hands successes over: it imports this module)
    from asyncjobs.worker.executor import Executor
    from asyncjobs.worker.slots import Execution

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Pending:
    """A successful attempt waiting for the Completer."""

    execution: Execution
    task: Task
    value: Any
    finished_at: datetime
    started: float


class Completer:
    """Records successful attempts in batches, on a thread of its own (group commit).

    Slots hand over a success and go on to their next job; the completer writes whatever
    has accumulated meanwhile (up to ``max_batch``) with ``services.record_successes`` in one
    transaction, then reports each job to ``on_done``. A job stays in its worker's hands
    (its lease renewed) until its batch has committed, so a crash before that is a lost
    attempt like any other and the job runs again: nothing is reported finished before it
    is durable.
    """

    def __init__(
        self,
        executor: Executor,
        on_done: Callable[[Execution, JobStatus | None], object],
        *,
        max_batch: int = 500,
    ) -> None:
        self.executor = executor
        self.on_done = on_done
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="asyncjobs-completer", daemon=True)
        self.batches = 0
        self.recorded = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        self._queue.put(pending)

    def stop(self, timeout: float) -> None:
        """Record what was handed over so far, then end the thread (waits up to ``timeout``)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                self._write(batch)
        finally:
            connections.close_all()

    def _write(self, batch: list[Pending]) -> None:
        executor = self.executor
        successes = [
            services.Success(
                p.execution.job,
                p.value,
                p.finished_at,
                p.execution.attempt_data.get("http_status"),
                p.execution.started_at,
            )
            for p in batch
        ]
        singly: dict[Any, JobStatus | None] = {}

        def one_by_one(problem: Exception) -> set[Any]:
            # One value of the batch was refused: record each job on its own, so that only
            # that one fails (see Executor._record_success).
            for p in batch:
                job = p.execution.job
                singly[job.pk] = executor.record_success(job, p.value, p.execution)
            return set()

        recorded = executor.with_db_retry(
            batch[0].execution.job,
            lambda: services.record_successes(
                successes, worker_id=executor.worker_id, using=executor.backend.database
            ),
            on_data_error=one_by_one,
        )
        self.batches += 1
        for pending in batch:
            job = pending.execution.job
            if job.pk in singly:
                status = singly[job.pk]
            else:
                status = JobStatus.SUCCEEDED if recorded and job.pk in recorded else None
            self.recorded += status is not None
            try:
                executor.report(job, pending.task, status, pending.started)
            except Exception:
                logger.exception("Job %s: reporting its outcome failed", job.pk)
            self.on_done(pending.execution, status)
        close_broken_connections()
