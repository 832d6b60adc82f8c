"""The worker process: its main loop, signals and shutdown.

Threads of one worker process, each with its own database connection (Django's are per
thread):

- the main thread claims ready jobs into free slots (``Claimer``), promotes due scheduled
  jobs first (``Promoter``), enforces timeouts and ``--max-memory`` (``Watchdog``);
- ``concurrency`` slot threads each run one job at a time (``Slots``, ``Executor``); a job
  under a rate limit at its start slot, or given back unstarted if the thread got there late;
  past ``MAX_DB_CONNECTIONS`` they share that many connections per database
  (``ConnectionGate``);
- an event loop thread, started by the first ``async def`` task, runs every async task of
  the worker while its slot waits for it (``EventLoop``);
- a completer thread records successes in batches (``Completer``), one transaction each;
- a heartbeat thread renews the worker's row and its jobs' leases and relays cancellation
  requests to running tasks (``Heartbeat``);
- a maintenance thread runs the maintenance services: rescue and pruning when it holds the
  cluster-wide lock, cron ticks (``maintenance.Maintenance``);
- on PostgreSQL a listener thread claims as soon as a ``NOTIFY`` comes (a round of its own,
  on its own connection, in turn with the main loop's), and tells the claimer of announced
  jobs under limits and of paused or resumed queues;
- a signal thread turns SIGTERM and SIGINT into a graceful stop (``StopSignals``).
"""

import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from django.db import DatabaseError, InterfaceError, connections
from django.utils import timezone

from asyncjobs import db, services
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import WorkerStatus
from asyncjobs.worker import options
from asyncjobs.worker.claimer import Claimer
from asyncjobs.worker.completer import Completer
from asyncjobs.worker.connections import ConnectionGate
from asyncjobs.worker.eventloop import EventLoop
from asyncjobs.worker.executor import Executor
from asyncjobs.worker.heartbeat import Heartbeat
from asyncjobs.worker.inprocess import InProcess
from asyncjobs.worker.maintenance import (
    CronTicker,
    Maintenance,
    Promoter,
    Pruner,
    Rescuer,
    Scheduler,
)
from asyncjobs.worker.prefetch import PREFETCH_MAX_WAIT, Prefetch
from asyncjobs.worker.recovery import Refusals, close_broken_connections, until_db
from asyncjobs.worker.signals import StopSignals
from asyncjobs.worker.slots import Slots
from asyncjobs.worker.watchdog import MEMORY_CHECK_EVERY, Watchdog

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STUCK = 3  # too many timed-out threads would not stop: restart me
EXIT_MEMORY = 4  # resident memory passed --max-memory: restart me
# Successes handed to the completer but not yet recorded, past which no more jobs are claimed
# (the database is slow or away: do not pile up work that cannot be recorded).
MAX_COMPLETING = 1000
# How much sooner than the main loop's sleep ends the listener thread's round must want it
# awake to wake it (see Runner._claim_announced).
WAKE_MARGIN = 0.005


class Runner(InProcess):
    """One worker process's loop. ``run()`` blocks until the worker stops and returns the
    exit code; ``run_once()`` does one round in the calling thread (for tests and scripts).

    Parameters:
        backend: the ``TASKS`` alias of an asyncjobs backend.
        queues: the queues to take jobs from; default all of the backend's queues (or every
            queue if the backend lists none).
        concurrency: how many jobs run at once (threads; an async task's slot waits while
            the task runs on the worker's one event loop).
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
            ``asyncjobs.worker.prefetch``).
        max_connections: at most this many database connections (per database) held by the
            slot threads at once, when ``concurrency`` is larger; default
            ``MAX_DB_CONNECTIONS`` (0 or None: no bound). See ``asyncjobs.worker.connections``.
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
        max_connections: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1.")
        self.max_connections = options.max_connections(max_connections)
        self.prefetch = options.prefetch(prefetch)
        self.max_memory = options.max_memory(max_memory)
        self.backend = options.get_backend(backend)
        self.alias = self.backend.database
        self.queues = options.queues(self.backend, queues)
        self.concurrency = concurrency
        self.burst = burst
        self.max_jobs = max_jobs
        self.strategy = db.for_alias(self.alias)
        self.strategy.worker_connections = True
        self.poll_interval = options.poll_interval(self.strategy, poll_interval)
        self.shutdown_timeout = shutdown_timeout or jobs_settings.SHUTDOWN_TIMEOUT
        self.lease = jobs_settings.LEASE_DURATION
        self.scheduler = Scheduler(self.backend)
        self.worker_id = services.new_worker_id()

        self._wake = threading.Event()
        self._stopping = threading.Event()
        # One round (_step) at a time: the main loop's, or the listener thread's on a
        # notification (see _listen_loop). _sleep_until: when the main loop's sleep ends
        # (time.monotonic(); 0 while it does not sleep); _stop_round: a listener's round
        # ended the worker (as _step returning None does in the main loop).
        self._round_lock = threading.Lock()
        self._sleep_until = 0.0
        self._stop_round = False
        # When a listener's round that ended while the main loop was not asleep wants it
        # to go round again (time.monotonic(); inf: no wish): the main loop's next sleep
        # ends then at the latest.
        self._wanted_at = float("inf")
        # The last round's claim found fewer ready jobs than it had room for, and any job
        # that becomes ready is announced: a slot coming free is then no reason for a round
        # (see _dry_after). _round_dry: what the round under way found.
        self._dry = self._round_dry = False
        self.claimer = Claimer(
            strategy=self.strategy,
            worker_id=self.worker_id,
            queues=self.queues,
            lease=self.lease,
            poll_interval=self.poll_interval,
        )
        self.promoter = Promoter(
            self.alias, queues=self.queues, interval=timedelta(seconds=self.poll_interval)
        )
        self.sizing = Prefetch(slots=concurrency, most=self.prefetch)
        self.refusals = Refusals(self.worker_id)
        self.gate = (
            ConnectionGate(self.max_connections)
            if self.max_connections is not None and self.max_connections < concurrency
            else None
        )
        self.event_loop = EventLoop()
        self.executor = Executor(
            self.backend, self.worker_id, clock=timezone.now, record_timeout=self.lease
        )
        self.slots = Slots(
            size=concurrency,
            executor=self.executor,
            prefetch=self.sizing,
            worker_id=self.worker_id,
            wake=self._wake,
            stopping=self._stopping,
            on_free=self._slot_free,
            on_retry=self.promoter.expect,
            gate=self.gate,
            refusals=self.refusals,
            wants_idle_slot=self.claimer.idle_slot_wanted,
            wants_claim=lambda: not self._dry,
        )
        self.completer = Completer(self.executor, self.slots.finish)
        self.watchdog = Watchdog(self.slots, max_memory=self.max_memory)
        self.heartbeat = Heartbeat(
            self.slots,
            worker_id=self.worker_id,
            interval=jobs_settings.HEARTBEAT_INTERVAL,
            lease=self.lease,
            refusals=self.refusals,
        )
        self.maintenance = Maintenance(
            self.strategy,
            [
                Rescuer(self.alias),
                Pruner(self.alias),
                *([CronTicker(self.scheduler)] if self.scheduler.specs else []),
            ],
            worker_id=self.worker_id,
            refusals=self.refusals,
        )
        self.signals = StopSignals(
            worker_id=self.worker_id, stop=self.stop, shutdown_timeout=self.shutdown_timeout
        )
        self.exit_code = EXIT_OK

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (signal, ``--burst`` drained, ``--max-jobs`` reached)."""
        self.executor.completer = self.completer
        self.executor.loop = self.event_loop
        self.executor.refusals = self.refusals
        # Signals first: a SIGTERM while the worker starts (or waits for its database) is a
        # graceful stop, not a kill by the default handler.
        self.signals.install()
        self.completer.start()
        registered = until_db(
            lambda: services.register_worker(
                worker_id=self.worker_id,
                queues=self.queues or ["*"],
                concurrency=self.concurrency,
                backend=self.backend.alias,
                now=timezone.now(),
                using=self.alias,
            ),
            "registering the worker",
            worker_id=self.worker_id,
            refusals=self.refusals,
            stopping=self._stopping,
        )
        if registered is None:
            # Stopped before the database answered: no row to mark, no job in hand, nothing
            # started but the completer (idle); a shutdown would only retry the database.
            self.completer.stop(timeout=10.0)
            self.signals.restore()
            connections.close_all()
            return self.exit_code
        logger.info(
            "Worker %s started: queues=%s concurrency=%d database=%s (%s) connections=%s",
            self.worker_id,
            ",".join(self.queues or ["*"]),
            self.concurrency,
            self.alias,
            db.vendor_name(self.alias),
            f"{self.gate.limit} per database for the slots" if self.gate else "one per slot",
            extra={"worker_id": self.worker_id},
        )
        self.slots.start()
        self.heartbeat.start()
        self.maintenance.start()
        listener = self.strategy.listen(on_error=self._listener_error)
        listen_thread = threading.Thread(
            target=self._listen_loop, args=(listener,), name="asyncjobs-listener", daemon=True
        )
        listen_thread.start()
        try:
            self._loop()
        finally:
            self._shutdown(listener)
            self.signals.restore()
        return self.exit_code

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with self._round_lock:
                    idle = self._round()
                failures = 0
            except (DatabaseError, InterfaceError) as exc:
                failures += 1
                if db.is_too_many_connections(exc):
                    delay = self.refusals.refused(exc, "claiming jobs")
                else:
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
            if idle is None or self._stop_round:
                break
            if idle > 0:
                clock = time.monotonic()
                self._sleep_until = clock + idle
                # (After _sleep_until is set: a listener's round that ends later sees it.)
                wanted, self._wanted_at = self._wanted_at, float("inf")
                idle = min(idle, wanted - clock)
            if idle > 0:
                self._wake.wait(idle)
            self._sleep_until = 0.0
            self._wake.clear()

    def _round(self) -> float | None:
        """``_step``, told to the slots (see ``Slots.hold_for_timed``). The caller holds the
        round lock: the main loop's rounds and the listener thread's take turns."""
        number = self.slots.begin_round()
        self._round_dry = False  # (a round that fails is not dry)
        try:
            return self._step()
        finally:
            # (Set when the round ends, not cleared when one begins: a slot that comes free
            # meanwhile is counted by the next round, which this round asks for if it took
            # all it had room for.)
            self._dry = self._round_dry
            self.slots.end_round(number)

    def _step(self) -> float | None:
        """One round: watchdog, promote, claim. Returns how long to sleep (0: go on at once),
        or None to stop."""
        self.watchdog.check_timeouts()
        if self.watchdog.too_many_stuck():
            self.exit_code = EXIT_STUCK
            return None
        if self.watchdog.over_memory_limit():
            self.exit_code = EXIT_MEMORY
            return None
        if (pause := self.refusals.remaining()) > 0:
            # The database refuses connections: claim nothing until the backoff has passed.
            return min([pause, *self.slots.deadlines()])
        clock = time.monotonic()
        load = self.slots.load(clock)
        oldest = load.oldest_buffered
        if oldest is not None and clock - oldest >= PREFETCH_MAX_WAIT:
            # The slots are taken by longer jobs than the prefetch was sized for: give the
            # waiting jobs back so that idle workers can run them.
            self.slots.release_buffered()
            return 0.0
        target = self.sizing.target(load.running_ages)
        self.slots.low_water = target // 2
        running, waiting, buffered = len(load.running_ages), load.timed, load.buffered
        # Jobs under a rate limit are claimed only for slot threads with nothing to do, never
        # ahead: they must start at their start slot.
        idle = max(self.concurrency - running - waiting, 0)
        free = min(
            self.concurrency + target - running - waiting - buffered,
            MAX_COMPLETING - (load.busy - running - waiting - buffered),
        )
        if buffered > self.slots.low_water:
            free = 0  # enough in hand; a slot wakes us when it runs low
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self.slots.claimed)
            if free <= 0 and load.busy == 0:
                logger.info(
                    "Worker %s: finished %d jobs (--max-jobs)", self.worker_id, self.slots.claimed
                )
                return None
        claimed = 0
        if free > 0:
            if self.promoter.due_in() <= 0:
                self.promoter.run(now=timezone.now())
            claim = self.claimer.claim(free, idle=idle, on_timed=self.slots.dispatch)
            # (Those with a start slot were handed over as soon as their claim committed.)
            self.slots.dispatch([job for job in claim.jobs if job.pk not in claim.start_at])
            claimed = len(claim.jobs)
            if claimed == free:
                return 0.0  # more may be waiting; go on when a slot frees
            self._round_dry = self._dry_after()
        elif self.claimer.idle_slot_wanted() and (
            room := min(idle, self.max_jobs - self.slots.claimed if self.max_jobs else idle)
        ):
            # The buffer is full, but a slot thread is idle, held for a job under a rate
            # limit (Slots.hold_for_timed): claim those alone.
            claim = self.claimer.claim(room, idle=room, on_timed=self.slots.dispatch, plain=False)
            self.slots.dispatch([job for job in claim.jobs if job.pk not in claim.start_at])
        if self.burst and not claimed and load.busy == 0 and self.promoter.nothing_due():
            logger.info("Worker %s: queue drained (--burst)", self.worker_id)
            return None
        if free <= 0:
            # Full: wait for a slot to free (or a timeout to enforce).
            return self._sleep_time(self.poll_interval, claiming=False, buffered_since=oldest)
        if claimed:
            # We just took the last ready jobs: wait for a slot or a notification.
            return self._sleep_time(self.poll_interval)
        return self._sleep_time(self.poll_interval * random.uniform(0.8, 1.2))

    def _sleep_time(
        self, default: float, *, claiming: bool = True, buffered_since: float | None = None
    ) -> float:
        """How long to sleep: ``default`` at most, less if something is due sooner. While
        ``claiming``, that includes promoting due jobs and what the claimer waits for (see
        ``Claimer.next_look``)."""
        until = [default, *self.slots.deadlines()]
        if buffered_since is not None:
            until.append(max(buffered_since + PREFETCH_MAX_WAIT - time.monotonic(), 0.0))
        if self.max_memory is not None:
            until.append(MEMORY_CHECK_EVERY)
        if claiming:
            # (Only while claiming: with every slot taken, a rate limit's next start is no
            # reason to wake; a slot coming free is.)
            until += [self.claimer.next_look(), self.promoter.due_in()]
        return min(until)

    def _dry_after(self) -> bool:
        """Whether the claim just made, which found fewer ready jobs than it had room for,
        leaves nothing for a slot coming free to claim: true when every job that becomes
        ready is announced (a notification starts a round of its own) and none waits for a
        limit that a job's end here could lift (queues with a concurrency or rate limit,
        jobs under per-task or per-key limits), and no ``--burst`` or ``--max-jobs`` wants
        to see the last job end. Then, at a steady trickle, a job's end costs no empty
        claim (issue 29: two per job at 300 jobs/s); the poll interval's round still comes."""
        claimer = self.claimer
        return (
            self.strategy.announces
            and not self.burst
            and self.max_jobs is None
            and not claimer.limited
            and not claimer.keyed
            and not claimer.wants_idle_slot
            and claimer.retry_at is None
        )

    def _slot_free(self) -> None:
        if self.claimer.idle_slot_wanted():
            self._wake.set()  # a rate-limited job may be waiting for an idle slot

    # --- notifications -----------------------------------------------------------------------

    def _listen_loop(self, listener: db.Listener) -> None:
        try:
            while not self._stopping.is_set():
                payloads = listener.wait(self.poll_interval)
                if not payloads:
                    continue
                self.claimer.announced({db.notification_kind(payload) for payload in payloads})
                self._claim_announced()
        finally:
            connections.close_all()  # (this thread's own, if it claimed)

    def _claim_announced(self) -> None:
        """Run a round on this thread, right after a notification: a hand-off to the
        sleeping main loop cost a thread switch (more on a loaded machine) between the
        ``NOTIFY`` and the claim. If the main loop is in a round, this thread waits for it to
        end and then claims (notifications that come meanwhile are read together after
        it): handing the claim to the main loop instead kept it awake at a steady trickle,
        a round (and an empty claim) for nearly every job (issue 29). The main loop is
        woken only if this round wants it sooner than its sleep would end (more to claim, a
        deadline, the worker stopping), so that it does not claim again, for nothing, while
        the claimed job starts; if it is not asleep, the time this round wants it by bounds
        its next sleep instead. This thread claims on a connection of its own."""
        with self._round_lock:
            if self._stopping.is_set():
                return
            try:
                sleep: float | None = self._round()
            except (DatabaseError, InterfaceError):
                close_broken_connections()
                sleep = 0.0  # the main loop's round sees it, and backs off
            except Exception:
                # Not this thread's to die of: the main loop's next round meets it too.
                logger.exception("Worker %s: a round on the listener thread failed", self.worker_id)
                sleep = 0.0
        if sleep is None:
            self._stop_round = True
            self._wake.set()
            return
        clock = time.monotonic()
        # (Before _sleep_until is read: a main loop about to sleep reads it after.)
        self._wanted_at = min(self._wanted_at, clock + sleep)
        # A round that wants the main loop no sooner than its sleep ends (the same timers,
        # read a moment later) leaves it asleep.
        until = self._sleep_until
        if until and clock + sleep < until - WAKE_MARGIN:
            self._wake.set()

    def _listener_error(self, exc: BaseException) -> None:
        logger.warning("Worker %s: LISTEN connection failed (%s); polling", self.worker_id, exc)

    # --- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop claiming and shut down gracefully."""
        self._stopping.set()
        self._wake.set()

    def _mark(self, status: WorkerStatus) -> None:
        """Record the worker's ``status``, retrying a lost database for a few seconds."""
        until_db(
            lambda: services.set_worker_status(
                self.worker_id, status, now=timezone.now(), using=self.alias
            ),
            f"marking the worker {status}",
            worker_id=self.worker_id,
            give_up=timedelta(seconds=5),
        )

    def _shutdown(self, listener: db.Listener) -> None:
        self._stopping.set()
        listener.close()
        with self._round_lock:
            pass  # a round the listener thread began is over (none begins after this)
        self.slots.release_buffered()
        self._mark(WorkerStatus.STOPPING)
        deadline = time.monotonic() + self.shutdown_timeout.total_seconds()
        while time.monotonic() < deadline:
            self.watchdog.check_timeouts()
            if not len(self.slots):
                break
            self._wake.wait(0.1)
            self._wake.clear()
        # Whatever succeeded by now gets recorded before the rest is released.
        self.completer.stop(timeout=max(deadline - time.monotonic(), 0.0) + 10.0)
        leftover = self.slots.running_jobs()
        if leftover:
            released = until_db(
                lambda: services.release_jobs(
                    leftover, worker_id=self.worker_id, now=timezone.now()
                ),
                "releasing jobs",
                worker_id=self.worker_id,
                give_up=timedelta(seconds=10),
            )
            logger.warning(
                "Worker %s: released %s unfinished jobs back to the queue", self.worker_id, released
            )
        self.slots.stop()
        self.event_loop.stop()
        self.heartbeat.stop()
        self.maintenance.stop()
        with contextlib.suppress(DatabaseError, InterfaceError):
            self.heartbeat.beat()
        self._mark(WorkerStatus.STOPPED)
        logger.info(
            "Worker %s stopped after %d jobs",
            self.worker_id,
            self.slots.finished,
            extra={"worker_id": self.worker_id},
        )
        connections.close_all()
