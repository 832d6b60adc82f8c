"""The heartbeat: a thread that renews the worker's row and the leases of the jobs in its
hands, and relays cancellation requests to running tasks. It does nothing else, so that no
other work (maintenance has a thread of its own) delays a lease's renewal.

A beat that fails is logged and the next one comes as usual; one that the database refuses
a connection ("too many clients") goes through the worker's ``Refusals``: logged at most
once per interval for the whole worker, and the next beat waits for the backoff if that is
longer than the interval."""

import logging
import random
import threading
import time
from datetime import timedelta

from django.db import DatabaseError, InterfaceError, connections
from django.utils import timezone

from asyncjobs import services
from asyncjobs.worker.recovery import Refusals, close_broken_connections
from asyncjobs.worker.slots import Slots

logger = logging.getLogger(__name__)


class Heartbeat:
    """Beats every ``interval`` (±10 %) on a thread of its own once ``start``ed.

    Parameters:
        slots: the worker's slots (the jobs whose leases it renews; the finished count).
        worker_id: the worker's id.
        interval: the time between beats (``HEARTBEAT_INTERVAL``).
        lease: how far each beat extends the jobs' leases (``LEASE_DURATION``).
        refusals: the worker's backoff while the database refuses connections (None: a
            refusal is logged as any other database error).
    """

    def __init__(
        self,
        slots: Slots,
        *,
        worker_id: str,
        interval: timedelta,
        lease: timedelta,
        refusals: Refusals | None = None,
    ) -> None:
        self.slots = slots
        self.refusals = refusals
        self.worker_id = worker_id
        self.interval = interval.total_seconds()
        self.lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="asyncjobs-heartbeat", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """End the thread after its current beat (does not wait for it)."""
        self._stop.set()

    def beat(self) -> None:
        """Renew the worker's row and its jobs' leases, report how many jobs the worker has
        finished, and set the cancel event of each running job asked to stop. Safe to call
        from two threads at once (the stopping worker's last beat may meet the thread's)."""
        finished, held = self.slots.held()
        cancel = services.heartbeat(
            worker_id=self.worker_id,
            now=timezone.now(),
            lease=self.lease,
            finished=finished,
            job_ids=list(held),
            using=self.slots.alias,
        )
        for job_id in cancel:
            if job_id in held:
                held[job_id].cancel_event.set()

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.interval * random.uniform(0.9, 1.1)
        while not self._stop.wait(max(next_beat - time.monotonic(), 0.0)):
            next_beat = time.monotonic() + self.interval * random.uniform(0.9, 1.1)
            try:
                self.beat()
            except (DatabaseError, InterfaceError) as exc:
                backoff = self.refusals.met(exc, "renewing leases") if self.refusals else None
                if backoff is None:
                    logger.warning("Worker %s: heartbeat failed (%s)", self.worker_id, exc)
                else:
                    next_beat = max(next_beat, time.monotonic() + backoff)
                close_broken_connections()
            except Exception:
                logger.exception("Worker %s: heartbeat failed", self.worker_id)
        connections.close_all()
