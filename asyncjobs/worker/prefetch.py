"""How many jobs a worker claims ahead of its free slots (prefetch).

A worker holds, besides the jobs its slots run, about ``PREFETCH_WINDOW`` seconds of work at
its recent pace (at most ``--prefetch`` jobs), so that a slot that finishes a job takes the
next one from memory instead of waiting for a claim round trip, and each claim takes many
jobs.
"""

from collections.abc import Sequence

PREFETCH_WINDOW = 0.1
# A running job older than this does not count as a slot that will soon take a prefetched
# job; and prefetched jobs that waited this long are given back for other workers.
PREFETCH_MAX_WAIT = 1.0


class Prefetch:
    """The size of a worker's prefetch buffer, from the pace of its recent jobs.

    Parameters:
        slots: the worker's concurrency.
        most: at most this many jobs ahead (0: claim only for free slots).
    """

    def __init__(self, *, slots: int, most: int) -> None:
        self.slots = slots
        self.most = most
        # Recent seconds per job in a slot; None until one ran.
        self.average: float | None = None

    def target(self, running_ages: Sequence[float]) -> int:
        """How many jobs to hold beyond the slots: about ``PREFETCH_WINDOW`` seconds of work
        for the slots not taken by long jobs, at the recent pace, at most ``most``. None
        until a job has run, and none while every slot runs a long job.

        ``running_ages``: how long (seconds) each running job has been running."""
        if not self.most or self.average is None:
            return 0
        free = self.slots - sum(1 for age in running_ages if age >= PREFETCH_MAX_WAIT / 2)
        if free <= 0:
            return 0
        return min(self.most, int(free * PREFETCH_WINDOW / max(self.average, 1e-6)))

    def observe(self, seconds: float) -> None:
        """Fold one job's time in a slot into the recent pace: a slower job counts at once,
        faster ones bring the average down gradually. (Slot threads call this without a
        lock: a lost update only delays the pace by one job.)"""
        avg = self.average
        self.average = seconds if avg is None or seconds > avg else avg + (seconds - avg) * 0.2
