"""Rescuer: jobs whose worker died get their attempt closed as lost and are run again; batches
whose last counts were left as tallies are finished."""

from datetime import datetime, timedelta

from asyncjobs import services
from asyncjobs.conf import jobs_settings
from asyncjobs.worker.maintenance.base import AGAIN_AFTER, Done

# A run rescues at most this many jobs (short transactions; the next run comes AGAIN_AFTER).
RESCUE_LIMIT = 500


class Rescuer:
    """Every ``MAINTENANCE_INTERVAL``, under the maintenance lock: rescues the running jobs
    whose lease expired (``services.rescue_expired``: the attempt is recorded ``lost``, the
    job retried or failed per its policy), marks the workers that stopped heartbeating for
    a ``LEASE_DURATION`` as lost, and finishes the sealed batches whose last counts were
    left as tallies (``services.finish_stranded``).

    Parameters:
        using: the database alias.
        limit: the most jobs rescued in one run; a run that reaches it comes back after
            ``AGAIN_AFTER``.
    """

    name = "rescuer"
    locked = True

    def __init__(self, using: str, *, limit: int = RESCUE_LIMIT) -> None:
        self.using = using
        self.limit = limit

    @property
    def interval(self) -> timedelta:
        """``MAINTENANCE_INTERVAL``."""
        return jobs_settings.MAINTENANCE_INTERVAL

    def run(self, *, now: datetime) -> Done:
        """Rescue expired leases and mark lost workers as of ``now``."""
        rescued = services.rescue_expired(now=now, limit=self.limit, using=self.using)
        lost = services.mark_lost_workers(
            now=now, stale_after=jobs_settings.LEASE_DURATION, using=self.using
        )
        batches = services.finish_stranded(now=now, using=self.using)
        return Done(
            {"rescued": rescued, "workers_lost": lost, "batches_finished": batches},
            again_after=AGAIN_AFTER if rescued >= self.limit else None,
        )
