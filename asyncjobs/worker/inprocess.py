"""Running jobs in the calling thread, for tests and scripts: ``Runner.run_once`` and
``Runner.drain``."""

from datetime import datetime

from django.utils import timezone

from asyncjobs.backend import JobsBackend
from asyncjobs.worker.claimer import Claimer
from asyncjobs.worker.executor import Executor
from asyncjobs.worker.maintenance import Maintenance, Promoter
from asyncjobs.worker.slots import Execution


class InProcess:
    """The in-process use of a ``Runner``: one round, or rounds until nothing is ready, in
    the calling thread, with none of the worker's threads."""

    backend: JobsBackend
    worker_id: str
    concurrency: int
    maintenance: Maintenance
    promoter: Promoter
    claimer: Claimer

    def run_once(self, *, now: datetime | None = None) -> int:
        """Rescue and prune, enqueue due cron ticks, promote, claim up to ``concurrency`` jobs
        and run them in this thread.

        Returns how many jobs ran. Timeouts of synchronous tasks are not enforced here (there
        is no watchdog), and jobs under a rate limit start at once, their start slot or not;
        everything else behaves as in ``run()``. Meant for tests (with freezegun or an
        explicit ``now``) and scripts.
        """
        clock_now = now or timezone.now()
        executor = Executor(self.backend, self.worker_id, clock=lambda: now or timezone.now())
        self.maintenance.run_round(now=clock_now)
        self.promoter.run(now=clock_now)
        self.claimer.refresh()  # always current in-process
        jobs = self.claimer.claim(self.concurrency, clock=lambda: clock_now).jobs
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
