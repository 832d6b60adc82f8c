"""The maintenance thread: runs a worker's maintenance services, each when it is due."""

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from django.db import DatabaseError, InterfaceError, connections
from django.utils import timezone

from asyncjobs.db import ClaimStrategy
from asyncjobs.worker.maintenance.base import Done, Service
from asyncjobs.worker.recovery import Refusals, close_broken_connections

logger = logging.getLogger(__name__)


class Maintenance:
    """A worker's maintenance services, run on a thread of their own once ``start``ed, so
    that a slow round never delays a heartbeat or a claim.

    Each service runs every ``interval`` (±20 %), or when its last run asked
    (``Done.again_after``). The first run of a ``locked`` service comes at a random point of
    its first interval (workers started together take turns); the others run at once. The
    locked services due together run in one round under the cluster-wide maintenance lock
    (``ClaimStrategy.maintenance_lock``), skipped if another worker holds it; a locked service
    due within its jitter of such a round joins it rather than take the lock again.

    A service that fails is logged and runs again when next due; one that the database
    refuses a connection ("too many clients", taking the lock or in the service) goes through
    the worker's ``Refusals``: logged at most once per interval for the whole worker, and run
    again only after the backoff if that is longer than its interval.

    Parameters:
        strategy: the database's claim strategy (its maintenance lock).
        services: the services, in the order they run when due together.
        worker_id: the worker's id, for the log.
        refusals: the worker's backoff while the database refuses connections (None: a
            refusal is logged as any other database error).
    """

    def __init__(
        self,
        strategy: ClaimStrategy,
        services: Sequence[Service],
        *,
        worker_id: str,
        refusals: Refusals | None = None,
    ) -> None:
        self.strategy = strategy
        self.services = list(services)
        self.worker_id = worker_id
        self.refusals = refusals
        # The longest backoff a refusal asked for in the current round (seconds).
        self._backoff = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="asyncjobs-maintenance", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """End the thread after its current round (does not wait for it)."""
        self._stop.set()

    def run_round(self, *, now: datetime) -> dict[str, int]:
        """Run every service once as of ``now``, in this thread (in-process runs): the locked
        ones only if this process wins the maintenance lock. Returns the counts of what was
        done, by name. Errors propagate."""
        counts: dict[str, int] = {}
        for done in self._run(self.services, now=now, on_error=None).values():
            counts.update(done.counts)
        return counts

    def _run(
        self,
        services: Sequence[Service],
        *,
        now: datetime,
        on_error: Callable[[Service, Exception], None] | None,
    ) -> dict[Service, Done]:
        """Run ``services``: the locked ones under the lock, then the others."""
        results: dict[Service, Done] = {}

        def run(service: Service) -> None:
            try:
                results[service] = service.run(now=now)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(service, exc)

        locked = [s for s in services if s.locked]
        if locked:
            with self.strategy.maintenance_lock(now=now) as won:
                if won:
                    began = time.time()
                    try:
                        for service in locked:
                            run(service)
                    finally:
                        # (The span of a round, for proving that rounds never overlap across
                        # workers.)
                        logger.debug(
                            "Maintenance round of process %d: %.6f-%.6f",
                            os.getpid(),
                            began,
                            time.time(),
                        )
            counts = {k: v for s in locked if s in results for k, v in results[s].counts.items()}
            if any(counts.values()):
                logger.info("Maintenance: %s", counts, extra=counts)
        for service in services:
            if not service.locked:
                run(service)
        return results

    def _refused(self, exc: Exception, what: str) -> bool:
        """Whether ``exc`` is a refused connection (noted, and its backoff kept for the
        round)."""
        backoff = self.refusals.met(exc, what) if self.refusals is not None else None
        if backoff is None:
            return False
        self._backoff = max(self._backoff, backoff)
        return True

    def _failed(self, service: Service, exc: Exception) -> None:
        if isinstance(exc, DatabaseError | InterfaceError):
            if not self._refused(exc, f"running maintenance ({service.name})"):
                logger.warning("Worker %s: %s failed (%s)", self.worker_id, service.name, exc)
            close_broken_connections()
        else:
            logger.error("Worker %s: %s failed", self.worker_id, service.name, exc_info=exc)

    def _loop(self) -> None:
        start = time.monotonic()
        spread = random.random()
        due = {
            s: start + (spread * s.interval.total_seconds() if s.locked else 0.0)
            for s in self.services
        }
        while due and not self._stop.wait(max(min(due.values()) - time.monotonic(), 0.0)):
            current = time.monotonic()
            ready = [s for s in self.services if due[s] <= current]
            if any(s.locked for s in ready):
                ready = [
                    s
                    for s in self.services
                    if s in ready
                    or (s.locked and due[s] - current <= 0.2 * s.interval.total_seconds())
                ]
            jitter = random.uniform(0.8, 1.2)
            for service in ready:
                due[service] = current + service.interval.total_seconds() * jitter
            self._backoff = 0.0
            results: dict[Service, Done] = {}
            try:
                results = self._run(ready, now=timezone.now(), on_error=self._failed)
            except (DatabaseError, InterfaceError) as exc:  # taking or ending the lock
                if not self._refused(exc, "taking the maintenance lock"):
                    logger.warning("Worker %s: maintenance failed (%s)", self.worker_id, exc)
                close_broken_connections()
            except Exception:
                logger.exception("Worker %s: maintenance failed", self.worker_id)
            after = time.monotonic()
            for service, done in results.items():
                if done.again_after is not None:
                    due[service] = after + done.again_after.total_seconds()
            if self._backoff:
                for service in ready:
                    if service not in results:
                        due[service] = max(due[service], after + self._backoff)
        connections.close_all()
