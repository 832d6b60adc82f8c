"""A worker's slots: ``concurrency`` threads that each run one claimed job at a time, and the
executions in the worker's hands, from the claim to the recorded outcome.

An execution's life (``ExecutionState``)::

    BUFFERED (claimed ahead) ──► RUNNING ──► [COMPLETING: success handed to the completer] ──► DONE
    TIMED (rate-limited) ──────┘    └──► ABANDONED (timed out, over --max-memory; see watchdog)
    BUFFERED, TIMED ──► RELEASED (given back unstarted)

Every change of state happens under ``Slots.lock``.
"""

import contextlib
import enum
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from asyncjobs import services
from asyncjobs.backend import JobsBackend
from asyncjobs.models import Job, JobStatus
from asyncjobs.worker.connections import ConnectionGate
from asyncjobs.worker.executor import PENDING, Executor
from asyncjobs.worker.prefetch import Prefetch
from asyncjobs.worker.recovery import Refusals, close_broken_connections, until_db

logger = logging.getLogger(__name__)

# Order of the slots' work queue: jobs with a start slot first (they were claimed for idle
# slot threads and must start on time), then prefetched jobs, then the stop markers.
_TIMED, _BUFFERED, _STOP = 0, 1, 2
# The longest a slot thread stays idle for a job under a rate limit (Slots.hold_for_timed):
# one claim round takes a few milliseconds, tens on a loaded machine.
HOLD_FOR_CLAIM = 0.1


class ExecutionState(enum.Enum):
    """Where an execution is in its worker's hands (see the module docstring)."""

    BUFFERED = "buffered"  # claimed ahead, waiting for a slot
    TIMED = "timed"  # under a rate limit, waiting for its start slot in an idle slot thread
    RUNNING = "running"
    COMPLETING = "completing"  # succeeded, handed to the completer, not yet recorded
    DONE = "done"
    ABANDONED = "abandoned"  # the watchdog recorded its attempt and gave up on its thread
    RELEASED = "released"  # given back to the queue unstarted


@dataclass(eq=False)
class Execution:
    """A claimed job in a worker's hands."""

    job: Job
    # time.monotonic() deadline after which the watchdog records a timeout, or None.
    deadline: float | None = None
    thread: threading.Thread | None = None
    state: ExecutionState = ExecutionState.RUNNING
    # time.monotonic() when a slot began it (or when it was buffered, until then)
    started: float = field(default_factory=time.monotonic)
    # The wall-clock start recorded on the attempt, set by Executor.run.
    started_at: datetime | None = None
    # Filled in by the task through its context (e.g. the HTTP status of a callback).
    attempt_data: dict[str, Any] = field(default_factory=dict)
    # Made when first asked for (most jobs are never cancelled nor take a context).
    _cancel_event: threading.Event | None = field(default=None, repr=False)

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the job is asked to stop (relayed by the heartbeat)."""
        event = self._cancel_event
        if event is None:
            with _CANCEL_EVENT_LOCK:
                if self._cancel_event is None:
                    self._cancel_event = threading.Event()
                event = self._cancel_event
        return event

    def cancel_requested(self) -> bool:
        """Whether the job was asked to stop, without making its event."""
        event = self._cancel_event
        return event is not None and event.is_set()


_CANCEL_EVENT_LOCK = threading.Lock()


@dataclass(eq=False)
class TimedExecution(Execution):
    """A job under a rate limit, claimed for an idle slot thread, that must start at its start
    slot ``start_at`` and no later than ``services.START_TOLERANCE`` after it (else it is given
    back unstarted)."""

    start_at: datetime = datetime.min


def watchdog_deadline(job: Job, started: float) -> float | None:
    """When the watchdog gives up on an attempt. Async tasks get a grace period past their
    timeout so that their own cancellation (``asyncio.wait_for``) ends them cleanly first."""
    if job.timeout is None:
        return None
    seconds = job.timeout.total_seconds()
    return started + seconds + max(1.0, seconds * 0.1)


@dataclass(frozen=True)
class Load:
    """What a worker's slots hold at one moment (see ``Slots.load``)."""

    busy: int  # executions in hand: buffered, timed, running or completing
    running_ages: list[float]  # seconds each running job has run
    timed: int  # rate-limited jobs waiting for their start slot
    buffered: int
    oldest_buffered: float | None  # time.monotonic() the longest-waiting buffered job came


class Slots:
    """The slot threads of one worker and the executions it holds (``inflight``, by job id).

    Parameters:
        size: the number of slot threads (the worker's concurrency).
        executor: runs each job and records its outcome.
        prefetch: told each job's time in its slot (the pace that sizes the buffer).
        worker_id: the worker's id, for logs and for giving jobs back.
        wake: set to wake the worker's main loop (a slot came free, the buffer ran low).
        stopping: set when the worker stops: rate-limited jobs are then given back.
        on_free: called when a slot finished a job and is free for the next one.
        on_retry: called with a retried job's ``run_after`` (to promote it on time).
        gate: bounds the connections the slot threads hold (``MAX_DB_CONNECTIONS``); each
            slot closes its thread's connections after each job. None: no bound, and each
            slot thread keeps its connections open.
        refusals: the worker's backoff while the database refuses connections; a slot
            starts no job before it has passed.
        wants_idle_slot: whether jobs under a rate limit wait for an idle slot thread (the
            claimer's ``wants_idle_slot``; see ``hold_for_timed``).
        wants_claim: whether a slot coming free (or the buffer running low) is a reason to
            claim: False while the worker's last claim found fewer ready jobs than it had room
            for and any new one is announced (see ``Runner._dry``), so that at a trickle each
            job's end does not cost an empty claim.
    """

    def __init__(
        self,
        *,
        size: int,
        executor: Executor,
        prefetch: Prefetch,
        worker_id: str,
        wake: threading.Event,
        stopping: threading.Event,
        on_free: Callable[[], None] = lambda: None,
        on_retry: Callable[[datetime], None] = lambda at: None,
        gate: ConnectionGate | None = None,
        refusals: Refusals | None = None,
        wants_idle_slot: Callable[[], bool] = lambda: False,
        wants_claim: Callable[[], bool] = lambda: True,
    ) -> None:
        self.size = size
        self.gate = gate
        self.refusals = refusals
        self.executor = executor
        self.backend: JobsBackend = executor.backend
        self.alias = executor.backend.database
        self.prefetch = prefetch
        self.worker_id = worker_id
        self._wake = wake
        self._stopping = stopping
        self._on_free = on_free
        self._on_retry = on_retry
        self._wants_idle_slot = wants_idle_slot
        self._wants_claim = wants_claim
        # The main loop's claim rounds, begun and done (see hold_for_timed), and whether a
        # slot thread is held for one.
        self._rounds = threading.Condition(threading.Lock())
        self._rounds_begun = self._rounds_done = 0
        self._holding = False
        self.lock = threading.Lock()
        self.inflight: dict[str, Execution] = {}
        self._work: queue.PriorityQueue[tuple[int, int, Execution | None]] = queue.PriorityQueue()
        self._work_order = itertools.count()
        # Jobs taken in hand (claimed, less those given back), jobs finished, and buffered
        # jobs; the main loop is woken when the buffer falls to low_water.
        self.claimed = 0
        self.finished = 0
        self.buffered = 0
        self.low_water = 0

    def start(self) -> None:
        """Start the slot threads."""
        for _ in range(self.size):
            self.add_thread()

    def add_thread(self) -> None:
        """Start one more slot thread (in place of one the watchdog gave up on)."""
        threading.Thread(target=self._loop, name="asyncjobs-slot", daemon=True).start()

    def stop(self) -> None:
        """Let every slot thread end once the work queued before is done."""
        for _ in range(self.size):
            self._work.put((_STOP, next(self._work_order), None))

    def dispatch(self, jobs: Sequence[Job], start_at: Mapping[Any, datetime] | None = None) -> None:
        """Hand claimed jobs to the slots: those with a start slot (``start_at``, by primary
        key) ahead of the rest, which go through the buffer."""
        if not jobs:
            return
        slots = start_at or {}
        executions: list[Execution] = []
        for job in jobs:
            at = slots.get(job.pk)
            if at is None:
                executions.append(Execution(job=job, state=ExecutionState.BUFFERED))
            else:
                executions.append(TimedExecution(job=job, state=ExecutionState.TIMED, start_at=at))
        with self.lock:
            for execution in executions:
                self.inflight[str(execution.job.pk)] = execution
            self.claimed += len(executions)
            self.buffered += sum(1 for e in executions if e.state is ExecutionState.BUFFERED)
        for execution in executions:
            rank = _TIMED if isinstance(execution, TimedExecution) else _BUFFERED
            self._work.put((rank, next(self._work_order), execution))

    def begin_round(self) -> int:
        """The main loop begins a round (it reads the load, then claims): its number."""
        with self._rounds:
            self._rounds_begun += 1
            return self._rounds_begun

    def end_round(self, number: int) -> None:
        """The main loop's round ``number`` is over (what it claimed is dispatched)."""
        with self._rounds:
            self._rounds_done = number
            self._rounds.notify_all()

    def hold_for_timed(self, *, timeout: float = HOLD_FOR_CLAIM) -> bool:
        """What a slot thread that came free does before it takes more work: if jobs under a
        rate limit wait for an idle slot thread (``wants_idle_slot``), stay idle until the
        main loop has done a round that began after now (``timeout`` at most), so that its
        claim sees this idle thread and takes one of them, which comes first in the work
        queue. Without this, a slot that comes free takes the next prefetched job at once,
        and with a full buffer no claim ever sees an idle thread: the rate-limited jobs wait
        (the idle-slot race that held per-key rates at a small share of their rate). One
        thread holds at a time; returns whether this one did."""
        if self._stopping.is_set() or not self._wants_idle_slot():
            return False
        with self._rounds:
            if self._holding:
                return False
            self._holding = True
            after = self._rounds_begun
        try:
            self._wake.set()
            with self._rounds:
                self._rounds.wait_for(lambda: self._rounds_done > after, timeout)
        finally:
            with self._rounds:
                self._holding = False
        return True

    def load(self, clock: float) -> Load:
        """What the slots hold now (``clock``: ``time.monotonic()``)."""
        with self.lock:
            held = list(self.inflight.values())
            return Load(
                busy=len(held),
                running_ages=[clock - e.started for e in held if e.state is ExecutionState.RUNNING],
                timed=sum(1 for e in held if e.state is ExecutionState.TIMED),
                buffered=self.buffered,
                oldest_buffered=min(
                    (e.started for e in held if e.state is ExecutionState.BUFFERED), default=None
                ),
            )

    def __len__(self) -> int:
        """How many executions are in hand (buffered, timed, running or completing)."""
        with self.lock:
            return len(self.inflight)

    def held(self) -> tuple[int, dict[str, Execution]]:
        """How many jobs finished so far, and the executions in hand (a copy)."""
        with self.lock:
            return self.finished, dict(self.inflight)

    def running_jobs(self) -> list[Job]:
        """The jobs whose tasks are running now."""
        with self.lock:
            return [e.job for e in self.inflight.values() if e.state is ExecutionState.RUNNING]

    def deadlines(self) -> list[float]:
        """Seconds until each running job's watchdog deadline (0 if passed)."""
        now = time.monotonic()
        with self.lock:
            return [
                max(e.deadline - now, 0.0)
                for e in self.inflight.values()
                if e.deadline is not None and e.state is ExecutionState.RUNNING
            ]

    def release_buffered(self) -> None:
        """Give back the prefetched jobs no slot has started (see ``services.unclaim_jobs``)."""
        with self.lock:
            waiting = [e for e in self.inflight.values() if e.state is ExecutionState.BUFFERED]
            for execution in waiting:
                execution.state = ExecutionState.RELEASED
                del self.inflight[str(execution.job.pk)]
            self.buffered -= len(waiting)
            self.claimed -= len(waiting)
        if not waiting:
            return
        given = until_db(
            lambda: services.unclaim_jobs(
                [e.job for e in waiting], worker_id=self.worker_id, using=self.alias
            ),
            "giving back prefetched jobs",
            worker_id=self.worker_id,
            give_up=timedelta(seconds=10),
            refusals=self.refusals,
        )
        logger.info(
            "Worker %s: gave back %s prefetched jobs that no slot had started",
            self.worker_id,
            given,
            extra={"worker_id": self.worker_id},
        )

    def finish(self, execution: Execution, status: Any) -> bool:
        """Forget a finished execution (called by its slot, or by the completer once its
        success is recorded); False if the watchdog already gave up on it."""
        with self.lock:
            if execution.state is ExecutionState.ABANDONED:
                return False
            execution.state = ExecutionState.DONE
            self.inflight.pop(str(execution.job.pk), None)
            self.finished += 1
        if status == JobStatus.SCHEDULED:
            # Wake up for this job's retry even if it comes before the next regular promote.
            self._on_retry(execution.job.run_after)
            self._wake.set()
        else:
            self.wake_if_low()
        return True

    def wake_if_low(self) -> None:
        """Wake the main loop to claim when the prefetched jobs are down to the low water
        mark (always, without prefetch: a slot just came free), unless a claim would find
        nothing that was not announced (``wants_claim``)."""
        if self.buffered <= self.low_water and self._wants_claim():
            self._wake.set()

    def start_on_time(self, execution: TimedExecution) -> bool:
        """Wait for a rate-limited job's start slot and mark it running (what a slot thread
        does with a ``TIMED`` execution before it runs it). If this thread reached the slot
        later than ``services.START_TOLERANCE`` (an overloaded machine), or the worker is
        stopping, give the job back unstarted instead (``services.unclaim_jobs``) and return
        False: a late start could put more starts in one period than the rate limit allows."""
        with contextlib.suppress(Exception):
            # Import the task now, so that its start is a few Python calls after the check
            # below (the executor loads it again, from the cache; a failure is its to record).
            self.backend.load_task(execution.job)
        while not self._stopping.is_set():
            ahead = (execution.start_at - timezone.now()).total_seconds()
            if ahead <= 0:
                break
            self._stopping.wait(ahead)
        with self.lock:
            late = timezone.now() - execution.start_at
            if self._stopping.is_set() or late > services.START_TOLERANCE:
                execution.state = ExecutionState.RELEASED
                del self.inflight[str(execution.job.pk)]
                self.claimed -= 1
            else:
                self._begin(execution)
                return True
        given = until_db(
            lambda: services.unclaim_jobs(
                [execution.job], worker_id=self.worker_id, using=self.alias
            ),
            "giving back a job that missed its start slot",
            worker_id=self.worker_id,
            give_up=timedelta(seconds=10),
            refusals=self.refusals,
        )
        logger.info(
            "Worker %s: gave back job %s unstarted (%s; %.1f ms past its start slot)",
            self.worker_id,
            execution.job.pk,
            "stopping" if self._stopping.is_set() else "late",
            late.total_seconds() * 1000,
            extra={"worker_id": self.worker_id, "job_id": str(execution.job.pk), "given": given},
        )
        self._wake.set()
        return False

    def _back_off(self) -> None:
        """Wait while the worker backs off from a database that refuses connections."""
        refusals = self.refusals
        while refusals is not None and not self._stopping.is_set():
            remaining = refusals.remaining()
            if remaining <= 0:
                return
            self._stopping.wait(remaining)

    @staticmethod
    def _begin(execution: Execution) -> None:
        # (Under the lock: the watchdog reads the thread and deadline of running executions.)
        execution.state = ExecutionState.RUNNING
        execution.thread = threading.current_thread()
        execution.started = time.monotonic()
        execution.deadline = watchdog_deadline(execution.job, execution.started)

    def _loop(self) -> None:
        execution: Execution | None = None
        gate = self.gate
        try:
            if gate is not None:
                gate.enter()
            while True:
                if gate is not None:
                    gate.release()  # what the last job (or its record) opened
                if execution is not None:  # (came free: see hold_for_timed)
                    self.hold_for_timed()
                execution = self._work.get()[2]
                if execution is None:
                    return
                self._back_off()
                if isinstance(execution, TimedExecution):
                    if not self.start_on_time(execution):
                        continue
                else:
                    with self.lock:
                        if execution.state is not ExecutionState.BUFFERED:
                            continue  # given back while it waited
                        self._begin(execution)
                        self.buffered -= 1
                        low = 0 < self.buffered <= self.low_water
                    if low and self._wants_claim():
                        self._wake.set()  # time to claim more ahead
                try:
                    status = self.executor.run(execution)
                except Exception:
                    logger.exception("Worker %s: unexpected error running a job", self.worker_id)
                    status = None
                except BaseException:
                    if execution.state is ExecutionState.ABANDONED:
                        raise  # the watchdog's interruption, landing late: see below
                    # Task code's own (a hostile __str__ raising KeyboardInterrupt while its
                    # error was recorded): the slot lives on; the job is rescued at its lease.
                    logger.exception("Worker %s: unexpected error running a job", self.worker_id)
                    status = None
                self.prefetch.observe(time.monotonic() - execution.started)
                if status == PENDING:
                    # The completer records it and calls finish; this slot is free now.
                    with self.lock:
                        if execution.state is ExecutionState.ABANDONED:
                            return  # timed out: a replacement slot has taken our place
                        if execution.state is ExecutionState.RUNNING:  # (unless recorded)
                            execution.state = ExecutionState.COMPLETING
                    self.wake_if_low()
                    continue
                if not self.finish(execution, status):
                    return  # timed out: a replacement slot has taken this one's place
                self._on_free()
                close_broken_connections()
        except BaseException:
            # A timeout raised into this thread can land just after the job returned; in a
            # slot the watchdog abandoned that is expected. Anything else is a bug.
            if execution is None or execution.state is not ExecutionState.ABANDONED:
                logger.exception("Worker %s: slot thread died", self.worker_id)
        finally:
            connections.close_all()
