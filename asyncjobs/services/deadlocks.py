"""Transactions that the database failed to break a deadlock, run again from their start.

Every transition locks job rows before batch rows, and jobs of one statement in key order;
but a transition locks the job that ends before it can know that job's dependents, which
may sort either side of it, while an enqueue with ``depends_on`` locks its parents in key
order. An enqueue that depends on a job and on a job waiting for it (or that joins a batch
while a job of that batch ends) can therefore meet a cascade in the other order, and the
database breaks the cycle by failing one of the two. The enqueue and the operator's cancels
run their transaction through ``retry_deadlocks``: the one failed runs again, after the
other committed, and its caller never sees the deadlock (the completer retries its flushes
on its own).
"""

import copy
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.db import OperationalError, transaction

from asyncjobs import db
from asyncjobs.models import Job

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Runs of one transaction: a deadlock needs a rare crossing; five in a row is not a crossing.
DEADLOCK_TRIES = 5
# The pause before the second run, doubled before each next one, with jitter: the other
# transaction, woken by this one's rollback, takes the locks it waited for first; a run
# again at once could take them before it and close the same cycle again.
DEADLOCK_PAUSE = 0.05


def retry_deadlocks(
    run: Callable[[], T],
    *,
    using: str,
    what: str,
    restore: Callable[[], None] | None = None,
) -> T:
    """Return what ``run`` returns, run in a transaction (a savepoint inside the caller's);
    when the database fails it to break a deadlock, run it again after a short pause
    (``DEADLOCK_PAUSE``, doubling), up to ``DEADLOCK_TRIES`` times, ``restore`` first
    putting back what the failed run changed in memory. ``what``
    names the operation in the log.

    Where the database rolled back the caller's whole transaction (MariaDB/MySQL's InnoDB,
    inside a transaction the caller opened), nothing can be run again: the error is raised,
    as from any statement of that transaction."""
    retriable = (
        db.deadlock_keeps_transaction(using)
        or not transaction.get_connection(using).in_atomic_block
    )
    attempt = 1
    while True:
        try:
            with transaction.atomic(using=using):
                return run()
        except OperationalError as exc:
            if not retriable or attempt >= DEADLOCK_TRIES or not db.is_deadlock(exc):
                raise
        logger.info(
            "%s: the database broke a deadlock with it; running it again (%d)",
            what,
            attempt,
            extra={"attempt": attempt},
        )
        time.sleep(DEADLOCK_PAUSE * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        attempt += 1
        if restore is not None:
            restore()


def restorer(jobs: Iterable[Job]) -> Callable[[], None]:
    """What puts ``jobs`` (new, unsaved) back as they are now, after a run that stored them
    was rolled back: their fields and their ``_state``."""
    saved = [(job, dict(job.__dict__), copy.copy(job._state)) for job in jobs]

    def restore() -> None:
        for job, fields, state in saved:
            job.__dict__.clear()
            job.__dict__.update(fields)
            job._state = copy.copy(state)

    return restore
