"""The bound on the database connections a worker's slot threads hold (``MAX_DB_CONNECTIONS``).

Django gives each thread its own connection to each database and keeps it open, so a worker
whose ``concurrency`` slot threads all touch the ORM would hold ``concurrency`` connections
to each database. Past the bound, a worker gates its slot threads' connections:

- a slot thread opens a connection only with a permit, one of ``limit`` per database alias,
  waiting for one if all are taken (a task waiting so is still running: its timeout counts);
- at the end of each job, the slot closes what its thread opened (handing the connection
  back to Django's pool where ``OPTIONS["pool"]`` is configured), which gives the permit
  back.

A task that holds a connection across a long wait (a query, then an HTTP call) keeps its
permit for that long, so such tasks run at most ``limit`` at once; closing the connection
after the query (``django.db.close_old_connections()`` or ``connection.close()``) hands it
on. The worker's own threads (main, completer, heartbeat, maintenance, ``LISTEN``) are not
gated: they hold one connection each, always.
"""

import logging
import threading
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

# How long one wait for a permit lasts before it waits again: between two waits the watchdog's
# interruption of a timed-out task (an exception raised in its thread) can land.
PERMIT_WAIT = 0.25


class ConnectionGate:
    """At most ``limit`` open connections to each database alias among the threads that
    ``enter()`` the gate (a worker's slot threads).

    Parameters:
        limit: connections per database alias.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._permits: dict[str, threading.BoundedSemaphore] = {}
        self.waits = 0  # connections that had to wait for a permit (for the tests and logs)

    def permits(self, alias: str) -> threading.BoundedSemaphore:
        """The permits of one database alias."""
        with self._lock:
            permits = self._permits.get(alias)
            if permits is None:
                permits = self._permits[alias] = threading.BoundedSemaphore(self.limit)
            return permits

    def enter(self) -> None:
        """Gate the calling thread's connections, to every database (call it in the thread,
        before it opens any)."""
        for conn in connections.all():
            if isinstance(conn, _Gated):
                continue
            conn.__class__ = _gated_class(type(conn))
            assert isinstance(conn, _Gated)
            conn.asyncjobs_gate = self

    def release(self) -> None:
        """Close the calling thread's open connections, giving their permits back. A
        connection that fails to close is dropped (and its permit given back all the same)."""
        for conn in connections.all(initialized_only=True):
            if conn.connection is None or conn.in_atomic_block:
                continue  # (an atomic block left open by a task is the task's bug: keep it)
            try:
                conn.close()
            except Exception:
                logger.debug("closing a slot's connection failed", exc_info=True)
                conn.connection = None
                if isinstance(conn, _Gated):
                    conn.asyncjobs_return_permit()


class _Gated(BaseDatabaseWrapper):
    """Mixed in ahead of a database backend's own wrapper class: ``connect()`` takes a
    permit first, and closing gives it back."""

    asyncjobs_gate: ConnectionGate | None = None
    asyncjobs_permit: threading.BoundedSemaphore | None = None

    def connect(self) -> None:
        gate = self.asyncjobs_gate
        if gate is not None and self.asyncjobs_permit is None:
            permits = gate.permits(self.alias)
            if not permits.acquire(blocking=False):
                gate.waits += 1
                while not permits.acquire(timeout=PERMIT_WAIT):
                    pass
            self.asyncjobs_permit = permits
        try:
            super().connect()
        except BaseException:
            self.asyncjobs_return_permit()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.connection is None:
                self.asyncjobs_return_permit()

    def asyncjobs_return_permit(self) -> None:
        permits, self.asyncjobs_permit = self.asyncjobs_permit, None
        if permits is not None:
            permits.release()


_CLASSES: dict[type, type] = {}
_CLASSES_LOCK = threading.Lock()


def _gated_class(base: type[Any]) -> type[Any]:
    """The backend's wrapper class with ``_Gated`` mixed in (one per backend class)."""
    with _CLASSES_LOCK:
        gated = _CLASSES.get(base)
        if gated is None:
            gated = _CLASSES[base] = type(f"Gated{base.__name__}", (_Gated, base), {})
        return gated
