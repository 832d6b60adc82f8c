"""The watchdog: a worker gives up on attempts that ran past their timeout, or on every
running attempt when its memory passed ``--max-memory``, and notices threads that would not
stop. Called from the main loop."""

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable

from django.utils import timezone

from asyncjobs import services
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import JobTimeoutError, WorkerMemoryError
from asyncjobs.models import AttemptOutcome
from asyncjobs.text import safe_text
from asyncjobs.worker.slots import Execution, ExecutionState, Slots

logger = logging.getLogger(__name__)

STUCK_AFTER = 10.0  # seconds a timed-out thread may take to notice its interruption
MEMORY_CHECK_EVERY = 0.2  # seconds between looks at the resident size under --max-memory


def resident_mib() -> float | None:
    """This process's resident set size in MiB (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` inside ``thread`` at its next Python instruction.

    This is how a timed-out synchronous task is interrupted; it cannot interrupt a thread
    blocked in C code (a long ``time.sleep``, a socket read) until that call returns.
    """
    if thread.ident is None or not thread.is_alive():
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
    )


class Watchdog:
    """Gives up on the attempts of one worker's slots that it must not wait for.

    Parameters:
        slots: the worker's slots.
        max_memory: resident MiB past which every running attempt fails (None: no limit).
    """

    def __init__(self, slots: Slots, *, max_memory: int | None) -> None:
        self.slots = slots
        self.worker_id = slots.worker_id
        self.max_memory = max_memory
        # Threads of abandoned jobs, with the time.monotonic() at which they were abandoned.
        self._stuck: list[tuple[threading.Thread, float]] = []
        self._memory_checked = 0.0

    def check_timeouts(self) -> None:
        """Record a timeout for each running attempt past its deadline (see
        ``slots.watchdog_deadline``), interrupt its thread and give its slot a new one."""
        self._give_up(
            lambda e, now: e.deadline is not None and now >= e.deadline,
            lambda job: JobTimeoutError(
                f"Attempt {job.attempts} ran past its timeout of "
                f"{job.timeout.total_seconds() if job.timeout else 0} s"
            ),
            AttemptOutcome.TIMED_OUT,
        )

    def over_memory_limit(self) -> bool:
        """Whether the resident size passed ``max_memory``. If so, the running attempts are
        recorded as failed with ``WorkerMemoryError`` and interrupted, and the worker must
        stop: memory a runaway task took is rarely given back to the OS, so only a fresh
        process (started by the supervisor) is sure to be small again."""
        if self.max_memory is None or time.monotonic() - self._memory_checked < MEMORY_CHECK_EVERY:
            return False
        self._memory_checked = time.monotonic()
        rss = resident_mib()
        if rss is None or rss <= self.max_memory:
            return False
        limit = self.max_memory
        self._give_up(
            lambda e, now: True,
            lambda job: WorkerMemoryError(
                f"worker {self.worker_id} reached {rss:.0f} MiB resident memory (limit "
                f"{limit} MiB) while attempt {job.attempts} ran"
            ),
            AttemptOutcome.FAILED,
            before=lambda n: logger.error(
                "Worker %s: resident memory %.0f MiB is past --max-memory %d MiB; failing %d "
                "running attempts and exiting for the supervisor to restart the worker",
                self.worker_id,
                rss,
                limit,
                n,
                extra={"worker_id": self.worker_id},
            ),
        )
        return True

    def too_many_stuck(self) -> bool:
        """Whether too many abandoned threads ignored their interruption for STUCK_AFTER
        seconds (blocked in C code, most likely). Each keeps a thread and maybe a connection
        busy, so past ``MAX_STUCK_THREADS`` (default: the concurrency) the worker must stop
        and exit for its supervisor to restart it."""
        self._stuck = [(t, since) for t, since in self._stuck if t.is_alive()]
        now = time.monotonic()
        stuck = sum(1 for _, since in self._stuck if now - since >= STUCK_AFTER)
        limit = jobs_settings.MAX_STUCK_THREADS or self.slots.size
        if stuck >= limit:
            logger.error(
                "Worker %s: %d timed-out jobs will not stop; exiting so a supervisor restarts "
                "the process",
                self.worker_id,
                stuck,
            )
            return True
        return False

    def _give_up(
        self,
        which: Callable[[Execution, float], bool],
        error: Callable[..., BaseException],
        outcome: AttemptOutcome,
        *,
        before: Callable[[int], object] | None = None,
    ) -> int:
        """Abandon the running executions ``which`` selects: take them out of the slots'
        hands, then record each attempt with ``error(job)``, raise the error's type in its
        thread and start a fresh slot thread. Returns how many."""
        now = time.monotonic()
        slots = self.slots
        chosen: list[Execution] = []
        with slots.lock:
            for key, execution in list(slots.inflight.items()):
                if execution.state is ExecutionState.RUNNING and which(execution, now):
                    execution.state = ExecutionState.ABANDONED
                    del slots.inflight[key]
                    chosen.append(execution)
        if before is not None:
            before(len(chosen))
        for execution in chosen:
            self._abandon(execution, error(execution.job), outcome)
        return len(chosen)

    def _abandon(self, execution: Execution, error: BaseException, outcome: AttemptOutcome) -> None:
        job = execution.job
        try:
            status = services.record_failure(
                job,
                worker_id=self.worker_id,
                error=error,
                now=timezone.now(),
                outcome=outcome,
                traceback_text="",
                started_at=execution.started_at,
            )
        except Exception as exc:
            # (A locked SQLite file, a lost connection, ...) The slot must be freed all the
            # same, or the worker loses it for good. The job is safe: out of ``inflight``,
            # its lease is no longer renewed by the heartbeat, so unless the interrupted
            # thread records the timeout itself (Executor.run, retrying the database), the
            # job stays running only until its lease expires and the rescuer takes it back.
            logger.error(
                "Job %s %s attempt %d abandoned (%s); its failure could not be recorded "
                "(%s: %s); unless its thread records it, it is rescued when its lease expires",
                job.pk,
                job.task_path,
                job.attempts,
                error,
                type(exc).__name__,
                safe_text(exc, 500),
                extra={"job_id": str(job.pk), "task": job.task_path, "attempt": job.attempts},
            )
        else:
            logger.warning(
                "Job %s %s attempt %d abandoned (%s) -> %s",
                job.pk,
                job.task_path,
                job.attempts,
                error,
                status,
                extra={"job_id": str(job.pk), "task": job.task_path, "attempt": job.attempts},
            )
            if status is not None:
                with self.slots.lock:
                    self.slots.finished += 1
        if execution.thread is not None:
            self._stuck.append((execution.thread, time.monotonic()))
            _raise_in_thread(execution.thread, type(error))
        self.slots.add_thread()
