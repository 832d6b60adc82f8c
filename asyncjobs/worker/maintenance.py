"""Periodic housekeeping, done by whichever worker holds the maintenance lock."""

import logging
import os
import time
from datetime import datetime, timedelta

from asyncjobs import services
from asyncjobs.conf import as_timedelta, jobs_settings
from asyncjobs.db import ClaimStrategy

logger = logging.getLogger(__name__)

# A round rescues at most RESCUE_LIMIT jobs and prunes old jobs for at most PRUNE_TIME_LIMIT:
# it runs on the heartbeat thread, which must go on renewing leases and enqueueing cron ticks.
# A round that stops at either limit says so (``more_to_do``), and the worker comes back after
# AGAIN_AFTER instead of a whole MAINTENANCE_INTERVAL, so that a crash leaving many jobs
# behind, or thousands of jobs finishing each second, do not outrun rescue and retention.
RESCUE_LIMIT = 500
PRUNE_TIME_LIMIT = timedelta(seconds=1)
AGAIN_AFTER = timedelta(seconds=1)


def run_maintenance(strategy: ClaimStrategy, *, now: datetime) -> dict[str, int]:
    """Rescue jobs of dead workers, mark those workers lost, prune old worker rows and old
    finished jobs (``RETENTION``, for at most ``PRUNE_TIME_LIMIT``).

    Returns what was done, by name, with ``more_to_do`` 1 if the round stopped at a limit;
    empty if another worker holds the lock.
    """
    using = strategy.alias
    with strategy.maintenance_lock(now=now) as won:
        if not won:
            return {}
        began = time.time()
        try:
            done = _maintain(using, now=now)
        finally:
            # (The span of a round, for proving that rounds never overlap across workers.)
            logger.debug(
                "Maintenance round of process %d: %.6f-%.6f", os.getpid(), began, time.time()
            )
    if any(done.values()):
        logger.info("Maintenance: %s", done, extra=done)
    return done


def _maintain(using: str, *, now: datetime) -> dict[str, int]:
    """One round of maintenance, under the lock (see ``run_maintenance``)."""
    done = {
        "rescued": services.rescue_expired(now=now, limit=RESCUE_LIMIT, using=using),
        "workers_lost": services.mark_lost_workers(
            now=now, stale_after=jobs_settings.LEASE_DURATION, using=using
        ),
        "workers_pruned": services.prune_workers(
            now=now, older_than=jobs_settings.WORKER_RETENTION, using=using
        ),
    }
    # Short batches, for a limited time: a large backlog of old jobs is worked off over
    # several rounds instead of in one long burst.
    started = time.monotonic()
    pruned = services.prune_jobs(
        now=now,
        older_than={k: as_timedelta(v) for k, v in (jobs_settings.RETENTION or {}).items()},
        batch_size=jobs_settings.PRUNE_BATCH_SIZE,
        time_limit=PRUNE_TIME_LIMIT,
        using=using,
    )
    done["jobs_pruned"] = sum(pruned.values())
    out_of_time = time.monotonic() - started >= PRUNE_TIME_LIMIT.total_seconds()
    done["more_to_do"] = int(
        done["rescued"] >= RESCUE_LIMIT or (out_of_time and done["jobs_pruned"] > 0)
    )
    return done
