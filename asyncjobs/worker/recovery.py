"""Riding out database outages on a worker's threads: close what broke, retry a write, back off
while the database refuses new connections."""

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from asyncjobs.db import is_too_many_connections, left_in_transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds without a refusal after which the next one backs off from the start again.
QUIET_RESET = 60.0


def close_broken_connections() -> None:
    """Close this thread's database connections that errored and are no longer usable, so
    the next query reconnects. Healthy connections stay open: a worker reuses them."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        try:
            if conn.errors_occurred and not conn.is_usable():
                conn.close()
            else:
                conn.errors_occurred = False
        except Exception:
            logger.debug("closing a broken connection failed", exc_info=True)
            conn.connection = None


def _in_transaction(conn: BaseDatabaseWrapper) -> bool:
    try:
        return left_in_transaction(conn)
    except Exception:  # a broken connection: close_broken_connections' business
        logger.debug("could not tell whether %s is in a transaction", conn.alias, exc_info=True)
        return False


def open_transactions() -> set[str]:
    """The aliases of this thread's connections that are inside a transaction now (a job run
    inline, inside its caller's transaction, finds its caller's here)."""
    return {c.alias for c in connections.all(initialized_only=True) if _in_transaction(c)}


def end_open_transactions(already_open: set[str]) -> list[str]:
    """Roll back and drop this thread's connections that task code left inside a
    transaction (``left_in_transaction``) and that were not in one before it ran
    (``already_open``, from ``open_transactions``: a caller's own transaction is not the
    task's to end), so that the attempt's outcome and the next job on this thread are not
    written into it, never to be committed (or, on SQLite, behind a write lock nobody
    releases). Their wrappers are replaced too: Django keeps a leaked ``atomic()``'s state
    on them. Returns the aliases that had one."""
    left = []
    for conn in connections.all(initialized_only=True):
        if conn.alias in already_open or not _in_transaction(conn):
            continue
        left.append(conn.alias)
        with contextlib.suppress(Exception):
            conn.connection.rollback()
        with contextlib.suppress(Exception):
            conn.close()
        del connections[conn.alias]
    return left


def until_db(
    write: Callable[[], T],
    what: str,
    *,
    worker_id: str,
    give_up: timedelta | None = None,
    refusals: "Refusals | None" = None,
    stopping: threading.Event | None = None,
) -> T | None:
    """Run ``write`` and return its result, retrying with backoff (0.5 s doubling to 30 s)
    while the database is unreachable.

    Parameters:
        write: the database work; run again from the start after each error.
        what: what it does, for the log ("registering the worker").
        worker_id: the worker's id, for the log.
        give_up: stop retrying after this long and return None (default: never).
        refusals: the worker's ``Refusals``: a refused connection is logged through it (at
            most once per interval for the whole worker) rather than on each retry.
        stopping: the worker's stop event: once set, no more retries (returns None).
    """
    delay = 0.5
    stop_at = time.monotonic() + give_up.total_seconds() if give_up else None
    while True:
        try:
            return write()
        except (DatabaseError, InterfaceError) as exc:
            if stop_at is not None and time.monotonic() >= stop_at:
                logger.error("Worker %s: gave up %s: %s", worker_id, what, exc)
                return None
            if refusals is not None and is_too_many_connections(exc):
                refusals.refused(exc, what)
            else:
                logger.error(
                    "Worker %s: database error %s (%s); retrying in %.1fs",
                    worker_id,
                    what,
                    exc,
                    delay,
                )
            close_broken_connections()
            if stopping is None:
                time.sleep(delay)
            elif stopping.wait(delay):
                logger.info("Worker %s: stopped while %s", worker_id, what)
                return None
            delay = min(delay * 2, 30.0)


class Refusals:
    """The database refusing new connections ("too many clients"), as any thread of one
    worker meets it: a backoff the whole worker honours (no claim and no job starts until it
    passes) and a log line at most once per ``log_every`` seconds, however many threads meet
    it meanwhile. A refusal is the infrastructure's state, not a job's fault.

    Parameters:
        worker_id: the worker's id, for the log.
        log_every: seconds between two log lines about refusals.
    """

    def __init__(self, worker_id: str, *, log_every: float = 10.0) -> None:
        self.worker_id = worker_id
        self.log_every = log_every
        self._lock = threading.Lock()
        self._failures = 0
        self._until = 0.0
        self._logged_at: float | None = None
        self._unlogged = 0
        self.total = 0

    def refused(self, error: BaseException, what: str) -> float:
        """Note one refusal met while doing ``what``; returns the seconds to back off (0.5 s
        doubling to 30 s while refusals go on, jittered)."""
        now = time.monotonic()
        with self._lock:
            self.total += 1
            if now - self._until > QUIET_RESET:
                self._failures = 0  # refusals long ago: start the backoff afresh
            self._failures += 1
            delay = min(0.5 * 2 ** min(self._failures - 1, 10), 30.0) * random.uniform(0.8, 1.2)
            self._until = max(self._until, now + delay)
            due = self._logged_at is None or now - self._logged_at >= self.log_every
            unlogged = self._unlogged
            if due:
                self._logged_at, self._unlogged = now, 0
            else:
                self._unlogged += 1
        if due:
            logger.warning(
                "Worker %s: the database refuses new connections (%s) while %s; backing off "
                "%.1fs%s",
                self.worker_id,
                str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__,
                what,
                delay,
                f" ({unlogged} more refusals since the last report)" if unlogged else "",
                extra={"worker_id": self.worker_id, "refusals": self.total},
            )
        return delay

    def met(self, error: BaseException, what: str) -> float | None:
        """If ``error`` is a refused connection: note it (``refused``) and return the seconds
        to back off; for any other error, None (the caller handles it as before)."""
        if not is_too_many_connections(error):
            return None
        return self.refused(error, what)

    def remaining(self) -> float:
        """Seconds left of the current backoff (0: none)."""
        return max(self._until - time.monotonic(), 0.0)
