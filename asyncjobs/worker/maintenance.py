"""Periodic housekeeping, done by whichever worker holds the maintenance lock."""

import logging
from datetime import datetime

from asyncjobs import services
from asyncjobs.conf import as_timedelta, jobs_settings
from asyncjobs.db import ClaimStrategy

logger = logging.getLogger(__name__)


def run_maintenance(strategy: ClaimStrategy, *, now: datetime) -> dict[str, int]:
    """Rescue jobs of dead workers, mark those workers lost, prune old worker rows and old
    finished jobs (``RETENTION``).

    Returns what was done, by name; empty if another worker holds the lock.
    """
    using = strategy.alias
    with strategy.maintenance_lock() as won:
        if not won:
            return {}
        done = {
            "rescued": services.rescue_expired(now=now, using=using),
            "workers_lost": services.mark_lost_workers(
                now=now, stale_after=jobs_settings.LEASE_DURATION, using=using
            ),
            "workers_pruned": services.prune_workers(
                now=now, older_than=jobs_settings.WORKER_RETENTION, using=using
            ),
        }
        # A few batches per round: a large backlog of old jobs is worked off over several
        # rounds instead of in one long burst.
        pruned = services.prune_jobs(
            now=now,
            older_than={k: as_timedelta(v) for k, v in (jobs_settings.RETENTION or {}).items()},
            batch_size=jobs_settings.PRUNE_BATCH_SIZE,
            max_batches=5,
            using=using,
        )
        done["jobs_pruned"] = sum(pruned.values())
    if any(done.values()):
        logger.info("Maintenance: %s", done, extra=done)
    return done
