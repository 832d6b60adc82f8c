"""Pruner: retention of finished jobs and of stopped workers' rows."""

import time
from datetime import datetime, timedelta

from asyncjobs import services
from asyncjobs.conf import as_timedelta, jobs_settings
from asyncjobs.worker.maintenance.base import AGAIN_AFTER, Done

# A run prunes old jobs for at most this long: a large backlog is worked off over several
# runs (AGAIN_AFTER apart) in short batches, never in one long burst.
PRUNE_TIME_LIMIT = timedelta(seconds=1)


class Pruner:
    """Every ``MAINTENANCE_INTERVAL``, under the maintenance lock: deletes worker rows older
    than ``WORKER_RETENTION``, finished jobs past ``RETENTION`` (oldest first, in batches
    of ``PRUNE_BATCH_SIZE``), then finished batches with no job left (``prune_batches``).

    Parameters:
        using: the database alias.
        time_limit: how long one run may prune jobs; a run that stops at it with jobs
            pruned (more may be left) comes back after ``AGAIN_AFTER``.
    """

    name = "pruner"
    locked = True

    def __init__(self, using: str, *, time_limit: timedelta = PRUNE_TIME_LIMIT) -> None:
        self.using = using
        self.time_limit = time_limit

    @property
    def interval(self) -> timedelta:
        """``MAINTENANCE_INTERVAL``."""
        return jobs_settings.MAINTENANCE_INTERVAL

    def run(self, *, now: datetime) -> Done:
        """Prune worker rows and finished jobs past their retention as of ``now``."""
        workers = services.prune_workers(
            now=now, older_than=jobs_settings.WORKER_RETENTION, using=self.using
        )
        started = time.monotonic()
        retention = {k: as_timedelta(v) for k, v in (jobs_settings.RETENTION or {}).items()}
        pruned = services.prune_jobs(
            now=now,
            older_than=retention,
            batch_size=jobs_settings.PRUNE_BATCH_SIZE,
            time_limit=self.time_limit,
            using=self.using,
        )
        jobs = sum(pruned.values())
        # Batches after their jobs: one whose last job was just pruned goes in this run.
        keep_batches = services.batch_retention(retention)
        batches = (
            services.prune_batches(
                now=now,
                older_than=keep_batches,
                limit=jobs_settings.PRUNE_BATCH_SIZE,
                using=self.using,
            )
            if keep_batches is not None
            else 0
        )
        out_of_time = time.monotonic() - started >= self.time_limit.total_seconds()
        return Done(
            {"workers_pruned": workers, "jobs_pruned": jobs, "batches_pruned": batches},
            again_after=AGAIN_AFTER if out_of_time and jobs > 0 else None,
        )
