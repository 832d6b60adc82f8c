"""Promoter: scheduled jobs (``run_after``, retries waiting out their backoff) become
``queued`` when due."""

import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils import timezone

from asyncjobs import services
from asyncjobs.worker.maintenance.base import Done


class Promoter:
    """Promotes the due scheduled jobs of one worker's queues (``services.promote_due``).

    Every worker runs its own, on its main loop just before a claim and without the
    maintenance lock: a promotion is one conditional update, and a retry due in 0.1 s must
    not wait for whichever worker holds the lock. It runs once per ``interval`` (the poll
    interval), or sooner when the next scheduled job of its queues is due sooner, or a retry
    of its own comes due (``expect``).

    Parameters:
        using: the database alias.
        queues: the worker's queues (None: every queue).
        interval: the longest time between runs.
    """

    name = "promoter"
    locked = False

    def __init__(self, using: str, *, queues: Sequence[str] | None, interval: timedelta) -> None:
        self.using = using
        self.queues = list(queues) if queues is not None else None
        self.interval = interval
        self.next_at = 0.0  # time.monotonic() of the next run

    def run(self, *, now: datetime) -> Done:
        """Promote the jobs due at ``now``; the next run comes when the next one is due."""
        moved, next_due = services.promote_due(now=now, queues=self.queues, using=self.using)
        wait = self.interval
        if next_due is not None:
            wait = min(wait, max(next_due - now, timedelta(0)))
        self.next_at = time.monotonic() + wait.total_seconds()
        return Done({"promoted": moved}, again_after=wait)

    def due_in(self) -> float:
        """Seconds until the next run is due (0: now)."""
        return max(self.next_at - time.monotonic(), 0.0)

    def expect(self, at: datetime) -> None:
        """A job of this worker's comes due at ``at`` (a retry): run by then, even if that
        is before the next regular run. (Called from slot threads.)"""
        wait = (at - timezone.now()).total_seconds()
        self.next_at = min(self.next_at, time.monotonic() + max(wait, 0.0))

    def nothing_due(self) -> bool:
        """Promote what is due now, and say whether nothing was nor is due (``--burst``)."""
        moved, next_due = services.promote_due(
            now=timezone.now(), queues=self.queues, using=self.using
        )
        return moved == 0 and (next_due is None or next_due > timezone.now())
