"""Periodic housekeeping, done by whichever worker holds the maintenance lock."""

import logging
from datetime import datetime

from asyncjobs import services
from asyncjobs.conf import jobs_settings
from asyncjobs.db import ClaimStrategy

logger = logging.getLogger(__name__)


def run_maintenance(strategy: ClaimStrategy, *, now: datetime) -> dict[str, int]:
    """Rescue jobs of dead workers, mark those workers lost, prune old worker rows.

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
    if any(done.values()):
        logger.info("Maintenance: %s", done, extra=done)
    return done
