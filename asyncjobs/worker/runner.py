"""The worker process: claim, run, heartbeat, recover, stop cleanly.

Threads of one worker process:

- the main thread claims ready jobs into free slots, promotes due scheduled jobs, enforces
  timeouts (the watchdog) and handles signals;
- ``concurrency`` slot threads each run one job at a time (``Executor``); a job under a rate
  limit at its start slot, or given back unstarted if the thread got there late;
- a completer thread records successes in batches (``Completer``), one transaction each;
- a heartbeat thread renews the worker's row and its jobs' leases, relays cancellation
  requests to running tasks, and does maintenance (rescue, pruning) when it holds the lock;
- on PostgreSQL a listener thread turns ``NOTIFY`` into an immediate wake-up, and counts
  the announcements of jobs under limits and of paused or resumed queues.

Each thread has its own database connection (Django's are per thread).
"""

import contextlib
import ctypes
import itertools
import logging
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from django.db import DatabaseError, InterfaceError, connections
from django.utils import timezone

from asyncjobs import db, services
from asyncjobs.backend import JobsBackend
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError, JobTimeoutError, WorkerMemoryError
from asyncjobs.models import AttemptOutcome, WorkerStatus
from asyncjobs.tasks_api import task_backends
from asyncjobs.worker.executor import (
    PENDING,
    Completer,
    Execution,
    Executor,
    close_broken_connections,
    watchdog_deadline,
)
from asyncjobs.worker.maintenance import AGAIN_AFTER, run_maintenance
from asyncjobs.worker.scheduler import Scheduler

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STUCK = 3  # too many timed-out threads would not stop: restart me
EXIT_MEMORY = 4  # resident memory passed --max-memory: restart me
STUCK_AFTER = 10.0  # seconds a timed-out thread may take to notice its interruption
MEMORY_CHECK_EVERY = 0.2  # seconds between looks at the resident size under --max-memory
# Successes handed to the completer but not yet recorded, past which no more jobs are claimed
# (the database is slow or away: do not pile up work that cannot be recorded).
MAX_COMPLETING = 1000
# Claiming ahead (prefetch): a worker holds, besides the jobs its slots run, about this many
# seconds of work at its recent pace (at most --prefetch jobs), so that its slots never wait
# for a claim round trip and each claim takes many jobs.
PREFETCH_WINDOW = 0.1
# A running job older than this does not count as a slot that will soon take a prefetched
# job; and prefetched jobs that waited this long are given back for other workers.
PREFETCH_MAX_WAIT = 1.0
# Order of the slots' work queue: jobs with a start slot first (they were claimed for idle
# slot threads and must start on time), then prefetched jobs, then the stop markers.
TIMED, BUFFERED, STOP = 0, 1, 2


@dataclass(eq=False)
class TimedExecution(Execution):
    """A job under a rate limit, claimed for an idle slot thread, that must start at its start
    slot ``start_at`` and no later than ``services.START_TOLERANCE`` after it (else it is given
    back unstarted). Its state is ``timed`` until its slot thread starts it (``running``) or
    gives it back (``released``)."""

    start_at: datetime = datetime.min


def resident_mib() -> float | None:
    """This process's resident set size in MiB (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def get_backend(alias: str) -> JobsBackend:
    """The asyncjobs backend configured as ``TASKS[alias]``."""
    backend = task_backends[alias]
    if not isinstance(backend, JobsBackend):
        raise ConfigurationError(
            f"TASKS[{alias!r}] uses {type(backend).__name__}, not asyncjobs.backend.JobsBackend."
        )
    return backend


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


class Runner:
    """One worker process's loop. ``run()`` blocks until the worker stops and returns the
    exit code; ``run_once()`` does one round in the calling thread (for tests and scripts).

    Parameters:
        backend: the ``TASKS`` alias of an asyncjobs backend.
        queues: the queues to take jobs from; default all of the backend's queues (or every
            queue if the backend lists none).
        concurrency: how many jobs run at once (threads).
        burst: exit 0 once nothing is ready and nothing runs.
        max_jobs: exit 0 after finishing this many jobs.
        poll_interval: how long to sleep when idle between looks at the queue (PostgreSQL
            wakes earlier on NOTIFY); default ``POLL_INTERVAL`` where the project sets it,
            else the database's own default (MariaDB/MySQL: 0.2 s), else 1 s.
        shutdown_timeout: how long a stopping worker lets running jobs finish before it
            releases them back to the queue.
        max_memory: resident memory in MiB past which the worker fails the attempts it is
            running (``WorkerMemoryError``) and exits with status 4 for its supervisor to
            restart it; default ``WORKER_MAX_MEMORY`` (None: no limit). Linux only.
        prefetch: at most this many jobs claimed ahead of free slots (0: none); default
            ``WORKER_PREFETCH``. How many are held adapts to the jobs' recent duration (see
            ``PREFETCH_WINDOW``).
    """

    def __init__(
        self,
        *,
        backend: str = "default",
        queues: Sequence[str] | None = None,
        concurrency: int = 4,
        burst: bool = False,
        max_jobs: int | None = None,
        poll_interval: timedelta | None = None,
        shutdown_timeout: timedelta | None = None,
        max_memory: int | None = None,
        prefetch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1.")
        self.prefetch = jobs_settings.WORKER_PREFETCH if prefetch is None else prefetch
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ConfigurationError(f"prefetch must be 0 or more, not {self.prefetch!r}.")
        self.max_memory = max_memory or jobs_settings.WORKER_MAX_MEMORY
        if self.max_memory is not None and resident_mib() is None:
            raise ConfigurationError(
                "max_memory needs /proc/self/statm (Linux); run without a memory limit here."
            )
        self.backend = get_backend(backend)
        self.alias = self.backend.database
        if queues:
            unknown = set(queues) - self.backend.queues if self.backend.queues else set()
            if unknown:
                raise ConfigurationError(
                    f"Queues {sorted(unknown)} are not in TASKS[{backend!r}]['QUEUES'] "
                    f"({sorted(self.backend.queues)})."
                )
            self.queues: list[str] | None = list(dict.fromkeys(queues))
        else:
            self.queues = sorted(self.backend.queues) or None
        self.concurrency = concurrency
        self.burst = burst
        self.max_jobs = max_jobs
        self.strategy = db.for_alias(self.alias)
        if poll_interval is None and "POLL_INTERVAL" not in jobs_settings.user_settings:
            poll_interval = db.default_poll_interval(self.strategy)
        self.poll_interval = (poll_interval or jobs_settings.POLL_INTERVAL).total_seconds()
        self.shutdown_timeout = shutdown_timeout or jobs_settings.SHUTDOWN_TIMEOUT
        self.lease = jobs_settings.LEASE_DURATION
        self.scheduler = Scheduler(self.backend)
        self.worker_id = services.new_worker_id()

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._work: queue.PriorityQueue[tuple[int, int, Execution | None]] = queue.PriorityQueue()
        self._work_order = itertools.count()
        self._inflight: dict[str, Execution] = {}
        # Threads of timed-out jobs, with the time.monotonic() at which they were abandoned.
        self._stuck: list[tuple[threading.Thread, float]] = []
        self._claimed = 0
        # Prefetched jobs waiting for a slot; the main loop is woken when they fall to
        # _low_water. _avg_run: recent seconds per job in a slot (None until one ran).
        self._buffered = 0
        self._low_water = 0
        self._avg_run: float | None = None
        self._finished = 0
        self._finished_reported = 0
        self._next_promote = 0.0
        self._paused: set[str] = set()
        # Queues with a RATE_LIMIT or CONCURRENCY (claimed under their lock), and when the
        # rate limit lets the next job start. A worker of every queue takes them from the
        # settings' QUEUES.
        served = jobs_settings.QUEUES if self.queues is None else self.queues
        self._limited = {q for q in served if any(services.queue_limits(q))}
        self._rated = {q for q in self._limited if services.queue_limits(q)[0] is not None}
        self._rate_retry: datetime | None = None
        # Start slots of the jobs just claimed under rate limits (by job id), for _dispatch;
        # and whether a claim left rate-limited jobs for want of an idle slot thread (then a
        # slot coming free wakes the main loop).
        self._start_at: dict[str, datetime] = {}
        self._timed_wanted = False
        # Queues with ready jobs under per-task or per-key limits, and the paused queues:
        # re-read when the database announces a change (PostgreSQL: the listener counts the
        # announcements, and a re-read covers those counted before it began), and at least
        # every _keyed_every / poll interval in case one was missed (or where nothing is
        # announced). Off the path from a wake-up to the claim: see _sleep_time.
        self._keyed: set[str] = set()
        self._keyed_checked = -1e9
        self._paused_checked = -1e9
        self._keyed_every = (
            self.poll_interval if self.strategy.announces else min(self.poll_interval, 0.25)
        )
        self._keyed_announced = self._keyed_seen = 0
        self._queues_announced = self._queues_seen = 0
        self._signals = 0
        self._signal_fd: int | None = None  # written by the signal handler
        self._old_handlers: dict[int, Any] = {}
        self._memory_checked = 0.0
        self.exit_code = EXIT_OK

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (signal, ``--burst`` drained, ``--max-jobs`` reached)."""
        self.executor = Executor(
            self.backend, self.worker_id, clock=timezone.now, record_timeout=self.lease
        )
        self.completer = Completer(self.executor, self._finish)
        self.executor.completer = self.completer
        self.completer.start()
        self._until_db(
            lambda: services.register_worker(
                worker_id=self.worker_id,
                queues=self.queues or ["*"],
                concurrency=self.concurrency,
                backend=self.backend.alias,
                now=timezone.now(),
                using=self.alias,
            ),
            "registering the worker",
        )
        logger.info(
            "Worker %s started: queues=%s concurrency=%d database=%s (%s)",
            self.worker_id,
            ",".join(self.queues or ["*"]),
            self.concurrency,
            self.alias,
            db.vendor_name(self.alias),
            extra={"worker_id": self.worker_id},
        )
        self._install_signal_handlers()
        for _ in range(self.concurrency):
            self._start_slot()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="asyncjobs-heartbeat", daemon=True
        )
        heartbeat.start()
        listener = self.strategy.listen(on_error=self._listener_error)
        listen_thread = threading.Thread(
            target=self._listen_loop, args=(listener,), name="asyncjobs-listener", daemon=True
        )
        listen_thread.start()
        try:
            self._loop()
        finally:
            self._shutdown(listener)
            self._restore_signal_handlers()
        return self.exit_code

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                idle = self._step()
                failures = 0
            except (DatabaseError, InterfaceError) as exc:
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), 30.0) * random.uniform(0.8, 1.2)
                logger.error(
                    "Worker %s: database error (%s); reconnecting in %.1fs",
                    self.worker_id,
                    exc,
                    delay,
                    extra={"worker_id": self.worker_id},
                )
                close_broken_connections()
                self._stopping.wait(delay)
                continue
            if idle is None:
                break
            if idle > 0:
                self._wake.wait(idle)
            self._wake.clear()

    def _step(self) -> float | None:
        """One round: watchdog, promote, claim. Returns how long to sleep (0: go on at once),
        or None to stop."""
        self._check_timeouts()
        if self._too_many_stuck():
            self.exit_code = EXIT_STUCK
            return None
        if self._over_memory_limit():
            self.exit_code = EXIT_MEMORY
            return None
        clock = time.monotonic()
        with self._lock:
            # busy: buffered, running, or succeeded and waiting to be recorded
            busy = len(self._inflight)
            held = list(self._inflight.values())
            running_ages = [clock - e.started for e in held if e.state == "running"]
            waiting = sum(1 for e in held if e.state == "timed")
            buffered = self._buffered
            oldest = min((e.started for e in held if e.state == "buffered"), default=None)
        if oldest is not None and clock - oldest >= PREFETCH_MAX_WAIT:
            # The slots are taken by longer jobs than the prefetch was sized for: give the
            # waiting jobs back so that idle workers can run them.
            self._release_buffered()
            return 0.0
        target = self._prefetch_target(running_ages)
        self._low_water = target // 2
        running = len(running_ages)
        # Jobs under a rate limit are claimed only for slot threads with nothing to do, never
        # ahead: they must start at their start slot.
        idle = max(self.concurrency - running - waiting, 0)
        free = min(
            self.concurrency + target - running - waiting - buffered,
            MAX_COMPLETING - (busy - running - waiting - buffered),
        )
        if buffered > self._low_water:
            free = 0  # enough in hand; a slot wakes us when it runs low
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self._claimed)
            if free <= 0 and busy == 0:
                logger.info(
                    "Worker %s: finished %d jobs (--max-jobs)", self.worker_id, self._claimed
                )
                return None
        claimed: list[Any] = []
        if free > 0:
            now = timezone.now()
            if time.monotonic() >= self._next_promote:
                self._promote(now)
            claimed = self._claim(now, free, idle=idle, dispatch=True)
            if claimed and len(claimed) == free:
                return 0.0  # more may be waiting; go on when a slot frees
        if self.burst and not claimed and busy == 0 and self._nothing_due():
            logger.info("Worker %s: queue drained (--burst)", self.worker_id)
            return None
        if free <= 0:
            # Full: wait for a slot to free (or a timeout to enforce).
            return self._sleep_time(self.poll_interval, claiming=False, buffered_since=oldest)
        if claimed:
            # We just took the last ready jobs: wait for a slot or a notification.
            return self._sleep_time(self.poll_interval)
        return self._sleep_time(self.poll_interval * random.uniform(0.8, 1.2))

    def _claim(
        self,
        now: datetime,
        free: int,
        *,
        idle: int | None = None,
        frozen: bool = False,
        dispatch: bool = False,
    ) -> list[Any]:
        """Claim up to ``free`` jobs. Queues with a RATE_LIMIT or CONCURRENCY, and jobs under
        per-task or per-key limits, go through the limited paths (under their locks); every
        other ready job is claimed by one statement. At most ``idle`` (default ``free``) of
        them are jobs under a rate limit; their start slots are left in ``_start_at``. With
        ``dispatch``, the jobs are handed to the slots too, those with a start slot as soon as
        their claim commits (the rest of the claim must not make them late)."""
        queues = self._active_queues()
        keyed = self._keyed_queues(queues, frozen=frozen)
        special = sorted(({*queues} if queues is not None else keyed) & (self._limited | keyed))
        claimed: list[Any] = []
        clock = (lambda: now) if frozen else timezone.now
        timed_left = free if idle is None else min(idle, free)
        self._rate_retry = None
        self._start_at = {}
        self._timed_wanted = False
        handed: set[Any] = set()  # dispatched already
        for name in special:
            room = free - len(claimed)
            if room <= 0:
                break
            if name in self._rated:
                if timed_left <= 0:
                    continue
                room = min(room, timed_left)

            def claim(
                n: int,
                at: datetime,
                start_at: datetime | None,
                q: str = name,
                rated: int = timed_left,
            ) -> services.LimitedClaim:
                got = services.LimitedClaim()
                if q in keyed:
                    got = services.claim_keyed(
                        queue=q,
                        limit=n,
                        worker_id=self.worker_id,
                        clock=(lambda: at) if frozen else timezone.now,
                        lease=self.lease,
                        using=self.alias,
                        rated_limit=rated,
                        start_at=start_at,
                    )
                if q in self._limited and len(got.jobs) < n:
                    got.jobs += self.strategy.claim(
                        queues=[q],
                        limit=n - len(got.jobs),
                        worker_id=self.worker_id,
                        now=at,
                        lease=self.lease,
                    )
                return got

            if name in self._limited:
                got = services.claim_limited(
                    claim,
                    queue=name,
                    limit=room,
                    clock=clock,
                    using=self.alias,
                )
            else:
                got = claim(room, now, None)
            if got.retry_at is not None:
                self._rate_retry = min(filter(None, [self._rate_retry, got.retry_at]))
            claimed += got.jobs
            timed_left -= len(got.start_at)
            self._start_at.update((str(pk), at) for pk, at in got.start_at.items())
            if dispatch and got.start_at:
                timed = [job for job in got.jobs if job.pk in got.start_at]
                self._dispatch(timed)
                handed.update(job.pk for job in timed)
        # Jobs may have been left for want of an idle slot thread: let the next slot that
        # comes free wake the main loop (harmless otherwise: it only wakes while jobs run).
        self._timed_wanted = timed_left <= 0 and bool(special)
        plain = queues if queues is None else [q for q in queues if q not in self._limited]
        if (plain is None or plain) and len(claimed) < free:
            claimed += self.strategy.claim(
                queues=plain,
                limit=free - len(claimed),
                worker_id=self.worker_id,
                # A fresh clock: the queries above take time, and an attempt must not be
                # recorded as started before a job enqueued meanwhile.
                now=now if frozen else timezone.now(),
                lease=self.lease,
            )
        if dispatch:
            self._dispatch([job for job in claimed if job.pk not in handed])
        return claimed

    def _keyed_queues(self, queues: list[str] | None, *, frozen: bool) -> set[str]:
        """Queues holding ready jobs under per-task or per-key limits: re-read when such a
        job is announced (PostgreSQL), else at most every ``_keyed_every`` (a quarter second
        where nothing is announced); in-process always."""
        announced = self._keyed_announced
        if (
            frozen
            or announced != self._keyed_seen
            or time.monotonic() - self._keyed_checked >= self._keyed_every
        ):
            self._keyed = services.keyed_waiting(queues=queues, using=self.alias)
            self._keyed_checked, self._keyed_seen = time.monotonic(), announced
        return self._keyed

    def _active_queues(self) -> list[str] | None:
        """The queues to claim from: ours minus the paused ones, re-read when a pause or
        resume is announced (PostgreSQL), else at most once per poll interval (so a pause
        takes effect within one). None (every queue) unless some are paused or limited: then a
        worker of every queue names those holding ready jobs, so that the limited ones are
        claimed under their locks and the paused ones not at all."""
        announced = self._queues_announced
        if (
            announced != self._queues_seen
            or time.monotonic() - self._paused_checked >= self.poll_interval
        ):
            paused = services.paused_queues(using=self.alias)
            if paused != self._paused:
                logger.info(
                    "Worker %s: paused queues now %s",
                    self.worker_id,
                    ",".join(sorted(paused)) or "none",
                )
            self._paused, self._paused_checked = paused, time.monotonic()
            self._queues_seen = announced
        if self.queues is None:
            if not (self._paused or self._limited):
                return None
            return sorted(db.ready_queues(self.alias) - self._paused)
        if not self._paused:
            return self.queues
        return [q for q in self.queues if q not in self._paused]

    def _prefetch_target(self, running_ages: list[float]) -> int:
        """How many jobs to hold beyond the slots: about ``PREFETCH_WINDOW`` seconds of work
        for the slots not taken by long jobs, at the recent pace, at most ``prefetch``.
        None until a job has run, and none while every slot runs a long job."""
        if not self.prefetch or self._avg_run is None:
            return 0
        slots = self.concurrency - sum(1 for age in running_ages if age >= PREFETCH_MAX_WAIT / 2)
        if slots <= 0:
            return 0
        return min(self.prefetch, int(slots * PREFETCH_WINDOW / max(self._avg_run, 1e-6)))

    def _observe(self, seconds: float) -> None:
        """Fold one job's time in a slot into the recent pace: a slower job counts at once,
        faster ones bring the average down gradually."""
        avg = self._avg_run
        self._avg_run = seconds if avg is None or seconds > avg else avg + (seconds - avg) * 0.2

    def _release_buffered(self) -> None:
        """Give back the prefetched jobs no slot has started (see ``services.unclaim_jobs``)."""
        with self._lock:
            waiting = [e for e in self._inflight.values() if e.state == "buffered"]
            for execution in waiting:
                execution.state = "released"
                del self._inflight[str(execution.job.pk)]
            self._buffered -= len(waiting)
            self._claimed -= len(waiting)
        if not waiting:
            return
        given = self._until_db(
            lambda: services.unclaim_jobs(
                [e.job for e in waiting], worker_id=self.worker_id, using=self.alias
            ),
            "giving back prefetched jobs",
            give_up=timedelta(seconds=10),
        )
        logger.info(
            "Worker %s: gave back %s prefetched jobs that no slot had started",
            self.worker_id,
            given,
            extra={"worker_id": self.worker_id},
        )

    def _sleep_time(
        self, default: float, *, claiming: bool = True, buffered_since: float | None = None
    ) -> float:
        """How long to sleep: ``default`` at most, less if something is due sooner. While
        ``claiming``, that includes promoting due jobs and, where changes are announced,
        re-reading the paused and keyed queues: done when their time comes, not after a
        notification (which should lead straight to the claim)."""
        until = [default]
        clock = time.monotonic()
        if buffered_since is not None:
            until.append(max(buffered_since + PREFETCH_MAX_WAIT - clock, 0.0))
        if self.max_memory is not None:
            until.append(MEMORY_CHECK_EVERY)
        if claiming:
            # (Only while claiming: with every slot taken, a rate limit's next start is no
            # reason to wake; a slot coming free is.)
            if self._rate_retry is not None:
                until.append(max((self._rate_retry - timezone.now()).total_seconds(), 0.0))
            until.append(max(self._next_promote - clock, 0.0))
            if self.strategy.announces:
                until.append(max(self._paused_checked + self.poll_interval - clock, 0.0))
                until.append(max(self._keyed_checked + self._keyed_every - clock, 0.0))
        with self._lock:
            until += [
                max(e.deadline - time.monotonic(), 0.0)
                for e in self._inflight.values()
                if e.deadline is not None and e.state == "running"
            ]
        return min(until)

    def _promote(self, now: datetime) -> None:
        _, next_due = services.promote_due(now=now, queues=self.queues, using=self.alias)
        wait = self.poll_interval
        if next_due is not None:
            wait = min(wait, max((next_due - now).total_seconds(), 0.0))
        self._next_promote = time.monotonic() + wait

    def _nothing_due(self) -> bool:
        moved, next_due = services.promote_due(
            now=timezone.now(), queues=self.queues, using=self.alias
        )
        return moved == 0 and (next_due is None or next_due > timezone.now())

    def _dispatch(self, jobs: list[Any]) -> None:
        """Hand claimed jobs to the slots: those with a start slot (``_start_at``) ahead of
        the rest, which go through the buffer."""
        if not jobs:
            return
        executions: list[Execution] = []
        for job in jobs:
            start_at = self._start_at.pop(str(job.pk), None)
            if start_at is None:
                executions.append(Execution(job=job, state="buffered"))
            else:
                executions.append(TimedExecution(job=job, state="timed", start_at=start_at))
        with self._lock:
            for execution in executions:
                self._inflight[str(execution.job.pk)] = execution
            self._claimed += len(executions)
            self._buffered += sum(1 for e in executions if e.state == "buffered")
        for execution in executions:
            rank = TIMED if isinstance(execution, TimedExecution) else BUFFERED
            self._work.put((rank, next(self._work_order), execution))

    # --- slots -------------------------------------------------------------------------------

    def _start_slot(self) -> None:
        threading.Thread(target=self._slot_loop, name="asyncjobs-slot", daemon=True).start()

    def _slot_loop(self) -> None:
        execution: Execution | None = None
        try:
            while True:
                execution = self._work.get()[2]
                if execution is None:
                    return
                if isinstance(execution, TimedExecution):
                    if not self._start_on_time(execution):
                        continue
                else:
                    with self._lock:
                        if execution.state != "buffered":
                            continue  # given back while it waited
                        execution.state = "running"
                        execution.thread = threading.current_thread()
                        execution.started = time.monotonic()
                        execution.deadline = watchdog_deadline(execution.job, execution.started)
                        self._buffered -= 1
                        low = 0 < self._buffered <= self._low_water
                    if low:
                        self._wake.set()  # time to claim more ahead
                try:
                    status = self.executor.run(execution)
                except Exception:
                    logger.exception("Worker %s: unexpected error running a job", self.worker_id)
                    status = None
                self._observe(time.monotonic() - execution.started)
                if status == PENDING:
                    # The completer records it and calls _finish; this slot is free now.
                    with self._lock:
                        if execution.state == "abandoned":
                            return  # timed out: a replacement slot has taken our place
                        if execution.state == "running":  # (unless already recorded)
                            execution.state = "completing"
                    self._wake_if_low()
                    continue
                if not self._finish(execution, status):
                    return  # timed out: a replacement slot has taken this one's place
                if self._timed_wanted:
                    self._wake.set()  # a rate-limited job may be waiting for an idle slot
                close_broken_connections()
        except BaseException:
            # A timeout raised into this thread can land just after the job returned; in a
            # slot the watchdog abandoned that is expected. Anything else is a bug.
            if execution is None or execution.state != "abandoned":
                logger.exception("Worker %s: slot thread died", self.worker_id)
        finally:
            connections.close_all()

    def _start_on_time(self, execution: TimedExecution) -> bool:
        """Wait for a rate-limited job's start slot and mark it running, in its slot thread.
        If the slot thread reached the slot later than ``services.START_TOLERANCE`` (an
        overloaded machine), or the worker is stopping, give the job back unstarted instead
        (``services.unclaim_jobs``) and return False: a late start could put more starts in
        one period than the rate limit allows."""
        with contextlib.suppress(Exception):
            # Import the task now, so that its start is a few Python calls after the check
            # below (the executor loads it again, from the cache; a failure is its to record).
            self.backend.load_task(execution.job)
        while not self._stopping.is_set():
            ahead = (execution.start_at - timezone.now()).total_seconds()
            if ahead <= 0:
                break
            self._stopping.wait(ahead)
        with self._lock:
            late = timezone.now() - execution.start_at
            if self._stopping.is_set() or late > services.START_TOLERANCE:
                execution.state = "released"
                del self._inflight[str(execution.job.pk)]
                self._claimed -= 1
            else:
                execution.state = "running"
                execution.thread = threading.current_thread()
                execution.started = time.monotonic()
                execution.deadline = watchdog_deadline(execution.job, execution.started)
                return True
        given = self._until_db(
            lambda: services.unclaim_jobs(
                [execution.job], worker_id=self.worker_id, using=self.alias
            ),
            "giving back a job that missed its start slot",
            give_up=timedelta(seconds=10),
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

    def _finish(self, execution: Execution, status: Any) -> bool:
        """Forget a finished execution (called by its slot, or by the completer once its
        success is recorded); False if the watchdog already gave up on it."""
        with self._lock:
            if execution.state == "abandoned":
                return False
            execution.state = "done"
            self._inflight.pop(str(execution.job.pk), None)
            self._finished += 1
        job = execution.job
        if status == "scheduled":
            # Wake up for this job's retry even if it comes before the next regular promote.
            wait = (job.run_after - timezone.now()).total_seconds()
            self._next_promote = min(self._next_promote, time.monotonic() + max(wait, 0.0))
            self._wake.set()
        else:
            self._wake_if_low()
        return True

    def _wake_if_low(self) -> None:
        """Wake the main loop to claim when the prefetched jobs are down to the low water
        mark (always, without prefetch: a slot just came free)."""
        if self._buffered <= self._low_water:
            self._wake.set()

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        expired: list[Execution] = []
        with self._lock:
            for key, execution in list(self._inflight.items()):
                if (
                    execution.deadline is not None
                    and now >= execution.deadline
                    and execution.state == "running"
                ):
                    execution.state = "abandoned"
                    del self._inflight[key]
                    expired.append(execution)
        for execution in expired:
            job = execution.job
            timeout = job.timeout.total_seconds() if job.timeout else 0
            self._abandon(
                execution,
                JobTimeoutError(f"Attempt {job.attempts} ran past its timeout of {timeout} s"),
                AttemptOutcome.TIMED_OUT,
            )

    def _abandon(self, execution: Execution, error: BaseException, outcome: AttemptOutcome) -> None:
        """Record the attempt of an execution the worker gives up on (already taken out of
        ``_inflight``), raise ``error``'s type inside its thread and give the slot a fresh
        thread."""
        job = execution.job
        status = services.record_failure(
            job,
            worker_id=self.worker_id,
            error=error,
            now=timezone.now(),
            outcome=outcome,
            traceback_text="",
            started_at=execution.started_at,
        )
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
            with self._lock:
                self._finished += 1
        if execution.thread is not None:
            self._stuck.append((execution.thread, time.monotonic()))
            _raise_in_thread(execution.thread, type(error))
        self._start_slot()

    def _over_memory_limit(self) -> bool:
        """Whether the resident size passed ``max_memory``. If so, the running attempts are
        recorded as failed with ``WorkerMemoryError`` and interrupted, and the worker stops:
        memory a runaway task took is rarely given back to the OS, so only a fresh process
        (started by the supervisor) is sure to be small again."""
        if self.max_memory is None or time.monotonic() - self._memory_checked < MEMORY_CHECK_EVERY:
            return False
        self._memory_checked = time.monotonic()
        rss = resident_mib()
        if rss is None or rss <= self.max_memory:
            return False
        with self._lock:
            running = [e for e in self._inflight.values() if e.state == "running"]
            for execution in running:
                execution.state = "abandoned"
                del self._inflight[str(execution.job.pk)]
        logger.error(
            "Worker %s: resident memory %.0f MiB is past --max-memory %d MiB; failing %d "
            "running attempts and exiting for the supervisor to restart the worker",
            self.worker_id,
            rss,
            self.max_memory,
            len(running),
            extra={"worker_id": self.worker_id},
        )
        for execution in running:
            self._abandon(
                execution,
                WorkerMemoryError(
                    f"worker {self.worker_id} reached {rss:.0f} MiB resident memory (limit "
                    f"{self.max_memory} MiB) while attempt {execution.job.attempts} ran"
                ),
                AttemptOutcome.FAILED,
            )
        return True

    def _too_many_stuck(self) -> bool:
        """Whether too many abandoned threads ignored their timeout for STUCK_AFTER seconds
        (blocked in C code, most likely). Each keeps a thread and maybe a connection busy, so
        past the limit the worker stops and exits for its supervisor to restart it."""
        self._stuck = [(t, since) for t, since in self._stuck if t.is_alive()]
        now = time.monotonic()
        stuck = sum(1 for _, since in self._stuck if now - since >= STUCK_AFTER)
        limit = jobs_settings.MAX_STUCK_THREADS or self.concurrency
        if stuck >= limit:
            logger.error(
                "Worker %s: %d timed-out jobs will not stop; exiting so a supervisor restarts "
                "the process",
                self.worker_id,
                stuck,
            )
            return True
        return False

    # --- heartbeat, maintenance, notifications -------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Heartbeat, cron ticks and maintenance, each when it is due."""
        interval = jobs_settings.HEARTBEAT_INTERVAL.total_seconds()
        maintenance_every = jobs_settings.MAINTENANCE_INTERVAL.total_seconds()
        start = time.monotonic()
        next_beat = start + interval * random.uniform(0.9, 1.1)
        next_maintenance = start + random.uniform(0, maintenance_every)
        next_cron = start if self.scheduler.specs else float("inf")
        while not self._heartbeat_stop.wait(
            max(min(next_beat, next_maintenance, next_cron) - time.monotonic(), 0.0)
        ):
            current = time.monotonic()
            try:
                if current >= next_beat:
                    next_beat = current + interval * random.uniform(0.9, 1.1)
                    self._beat()
                if current >= next_cron:
                    next_cron = current + self._run_schedules()
                if current >= next_maintenance:
                    next_maintenance = current + maintenance_every * random.uniform(0.8, 1.2)
                    done = run_maintenance(self.strategy, now=timezone.now())
                    if done.get("more_to_do"):
                        next_maintenance = time.monotonic() + AGAIN_AFTER.total_seconds()
            except (DatabaseError, InterfaceError) as exc:
                logger.warning("Worker %s: heartbeat failed (%s)", self.worker_id, exc)
                close_broken_connections()
            except Exception:
                logger.exception("Worker %s: heartbeat failed", self.worker_id)
        connections.close_all()

    def _run_schedules(self) -> float:
        """Enqueue due cron ticks; return the seconds until the next look."""
        now = timezone.now()
        self.scheduler.run_due(now=now)
        upcoming = self.scheduler.next_tick(now=now)
        if upcoming is None:
            return float("inf")
        wait = (upcoming - timezone.now()).total_seconds()
        return min(max(wait, 0.01), jobs_settings.HEARTBEAT_INTERVAL.total_seconds())

    def _beat(self) -> None:
        with self._lock:
            processed = self._finished - self._finished_reported
            held = dict(self._inflight)
        cancel = services.heartbeat(
            worker_id=self.worker_id,
            now=timezone.now(),
            lease=self.lease,
            processed=processed,
            job_ids=list(held),
            using=self.alias,
        )
        self._finished_reported += processed
        for job_id in cancel:
            if job_id in held:
                held[job_id].cancel_event.set()

    def _listen_loop(self, listener: db.Listener) -> None:
        while not self._stopping.is_set():
            payloads = listener.wait(self.poll_interval)
            if not payloads:
                continue
            kinds = {db.notification_kind(payload) for payload in payloads}
            # (This thread alone writes the counts; the main loop compares them.)
            if db.NOTIFY_KEYED in kinds:
                self._keyed_announced += 1
            if db.NOTIFY_QUEUE in kinds:
                self._queues_announced += 1
            self._wake.set()

    def _listener_error(self, exc: BaseException) -> None:
        logger.warning("Worker %s: LISTEN connection failed (%s); polling", self.worker_id, exc)

    # --- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop claiming and shut down gracefully."""
        self._stopping.set()
        self._wake.set()

    def _install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker gracefully; a second one ends it at once.

        A Python signal handler runs in the main thread between any two bytecodes, possibly
        while that thread holds a lock, an ``Event``'s own included (the main loop sleeps
        and wakes on Events all the time). Setting an Event from the handler could then wait
        forever on a lock its own thread holds: a worker hung on SIGTERM that way. So the
        handler takes no lock; it writes the signal's number to a pipe, and a thread of its
        own reads it, logs it and stops the worker."""
        if threading.current_thread() is not threading.main_thread():
            return
        read_fd, self._signal_fd = os.pipe()
        os.set_blocking(self._signal_fd, False)
        threading.Thread(
            target=self._signal_loop, args=(read_fd,), name="asyncjobs-signals", daemon=True
        ).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()
        fd, self._signal_fd = self._signal_fd, None
        if fd is not None:
            os.close(fd)  # the signal thread reads end-of-file and ends

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No lock, no logging here (see _install_signal_handlers).
        self._signals += 1
        if self._signals > 1:
            os.write(2, f"Worker {self.worker_id}: second signal, exiting now\n".encode())
            os._exit(1)
        fd = self._signal_fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, bytes([signum]))

    def _signal_loop(self, read_fd: int) -> None:
        try:
            while data := os.read(read_fd, 1):
                logger.info(
                    "Worker %s: %s received; finishing running jobs (up to %ss)",
                    self.worker_id,
                    signal.Signals(data[0]).name,
                    self.shutdown_timeout.total_seconds(),
                )
                self.stop()
        finally:
            os.close(read_fd)

    def _shutdown(self, listener: db.Listener) -> None:
        self._stopping.set()
        listener.close()
        self._release_buffered()
        self._until_db(
            lambda: services.set_worker_status(
                self.worker_id, WorkerStatus.STOPPING, now=timezone.now(), using=self.alias
            ),
            "marking the worker stopping",
            give_up=timedelta(seconds=5),
        )
        deadline = time.monotonic() + self.shutdown_timeout.total_seconds()
        while time.monotonic() < deadline:
            self._check_timeouts()
            with self._lock:
                if not self._inflight:
                    break
            self._wake.wait(0.1)
            self._wake.clear()
        # Whatever succeeded by now gets recorded before the rest is released.
        self.completer.stop(timeout=max(deadline - time.monotonic(), 0.0) + 10.0)
        with self._lock:
            leftover = [e.job for e in self._inflight.values() if e.state == "running"]
        if leftover:
            released = self._until_db(
                lambda: services.release_jobs(
                    leftover, worker_id=self.worker_id, now=timezone.now()
                ),
                "releasing jobs",
                give_up=timedelta(seconds=10),
            )
            logger.warning(
                "Worker %s: released %s unfinished jobs back to the queue", self.worker_id, released
            )
        for _ in range(self.concurrency):
            self._work.put((STOP, next(self._work_order), None))
        self._heartbeat_stop.set()
        with contextlib.suppress(DatabaseError, InterfaceError):
            self._beat()
        self._until_db(
            lambda: services.set_worker_status(
                self.worker_id, WorkerStatus.STOPPED, now=timezone.now(), using=self.alias
            ),
            "marking the worker stopped",
            give_up=timedelta(seconds=5),
        )
        logger.info(
            "Worker %s stopped after %d jobs",
            self.worker_id,
            self._finished,
            extra={"worker_id": self.worker_id},
        )
        connections.close_all()

    def _until_db(self, write: Any, what: str, give_up: timedelta | None = None) -> Any:
        """Run ``write``, retrying with backoff while the database is unreachable."""
        delay = 0.5
        stop_at = time.monotonic() + give_up.total_seconds() if give_up else None
        while True:
            try:
                return write()
            except (DatabaseError, InterfaceError) as exc:
                if stop_at is not None and time.monotonic() >= stop_at:
                    logger.error("Worker %s: gave up %s: %s", self.worker_id, what, exc)
                    return None
                logger.error(
                    "Worker %s: database error %s (%s); retrying in %.1fs",
                    self.worker_id,
                    what,
                    exc,
                    delay,
                )
                close_broken_connections()
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    # --- in-process use ----------------------------------------------------------------------

    def run_once(self, *, now: datetime | None = None) -> int:
        """Rescue and prune, enqueue due cron ticks, promote, claim up to ``concurrency`` jobs
        and run them in this thread.

        Returns how many jobs ran. Timeouts of synchronous tasks are not enforced here (there
        is no watchdog); everything else behaves as in ``run()``. Meant for tests (with
        freezegun or an explicit ``now``) and scripts.
        """
        clock_now = now or timezone.now()
        executor = Executor(self.backend, self.worker_id, clock=lambda: now or timezone.now())
        run_maintenance(self.strategy, now=clock_now)
        self.scheduler.run_due(now=clock_now)
        services.promote_due(now=clock_now, queues=self.queues, using=self.alias)
        self._paused_checked = -1e9  # always current in-process
        jobs = self._claim(clock_now, self.concurrency, frozen=True)
        self._start_at = {}  # (in-process runs start jobs at once, start slot or not)
        for job in jobs:
            executor.run(Execution(job=job))
        return len(jobs)

    def drain(self, *, now: datetime | None = None, limit: int = 10_000) -> int:
        """``run_once`` until nothing is ready (at most ``limit`` jobs). Returns the count."""
        total = 0
        while total < limit:
            ran = self.run_once(now=now)
            if not ran:
                break
            total += ran
        return total
