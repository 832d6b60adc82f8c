"""Riding out database outages on a worker's threads: close what broke, retry a write."""

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


def until_db(
    write: Callable[[], T], what: str, *, worker_id: str, give_up: timedelta | None = None
) -> T | None:
    """Run ``write`` and return its result, retrying with backoff (0.5 s doubling to 30 s)
    while the database is unreachable.

    Parameters:
        write: the database work; run again from the start after each error.
        what: what it does, for the log ("registering the worker").
        worker_id: the worker's id, for the log.
        give_up: stop retrying after this long and return None (default: never).
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
            logger.error(
                "Worker %s: database error %s (%s); retrying in %.1fs",
                worker_id,
                what,
                exc,
                delay,
            )
            close_broken_connections()
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
