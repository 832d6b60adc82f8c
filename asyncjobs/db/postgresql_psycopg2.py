"""psycopg2 compatibility for the PostgreSQL strategy: what psycopg 3 gives the fast path
(``COPY`` from an iterator, ``notifies()``) built on psycopg2's ``copy_expert`` and
``poll()``. Used when Django's PostgreSQL backend runs on psycopg2 (``fastpath.psycopg3()``
is false)."""

import itertools
import select
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from django.db.backends.base.base import BaseDatabaseWrapper

from asyncjobs.db import fastpath, rows
from asyncjobs.models import Job


class _CopySource:
    """A file-like source of ``COPY`` text for psycopg2's ``copy_expert``: each ``read``
    hands over the next chunk of lines (psycopg2 sends what it gets, whatever its size)."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        # What making the next chunk raised (psycopg2 reports it as its own error).
        self.error: Exception | None = None

    def read(self, size: int = -1) -> str:
        try:
            return next(self._chunks, "")
        except Exception as exc:
            self.error = exc
            raise


def copy_jobs_psycopg2(
    connection: BaseDatabaseWrapper,
    statement: str,
    given: list[Job],
    rest: Iterator[Job],
    chunk_size: int,
) -> list[Job]:
    """The PostgreSQL ``COPY`` of new jobs on psycopg2: the same statement and text, streamed
    through ``copy_expert`` ``chunk_size`` jobs at a time (the next jobs are built while
    PostgreSQL stores the last ones). Returns every job stored."""
    memo: dict[tuple[int, ...], str] = {}  # (``stored`` keeps the jobs alive meanwhile)
    stored: list[Job] = []

    def chunks() -> Iterator[str]:
        chunk = given + list(itertools.islice(rest, chunk_size - len(given)))
        while chunk:
            stored.extend(chunk)
            yield rows.copy_lines(chunk, connection, memo)
            chunk = list(itertools.islice(rest, chunk_size))

    source = _CopySource(chunks())
    try:
        with (
            fastpath.query_logged(connection, statement),
            connection.cursor() as wrapper,
            connection.wrap_database_errors,
        ):
            wrapper.cursor.copy_expert(statement, source)
    except Exception:
        if source.error is not None:  # a bad job, as psycopg 3's COPY would raise it
            raise source.error from None
        raise
    return stored


class Notification(Protocol):
    """A NOTIFY received (psycopg 3's ``Notify``, psycopg2's ``Notify``)."""

    @property
    def payload(self) -> str:
        """What the notifier sent with it."""
        ...


class ListeningConnection(Protocol):
    """What ``PostgresListener`` uses of a connection that LISTENs: a psycopg 3 connection,
    or ``Psycopg2Listening``."""

    def notifies(
        self, *, timeout: float, stop_after: int | None = None
    ) -> Iterable[Notification]: ...

    def close(self) -> None: ...


class Psycopg2Listening:
    """A psycopg2 connection that LISTENs on ``channel``, with what ``PostgresListener``
    uses of a psycopg 3 one: ``notifies(timeout=..., stop_after=...)`` and ``close()``.
    It waits with ``select`` on the connection's socket and reads with ``poll()``."""

    def __init__(self, params: dict[str, object], channel: str) -> None:
        import psycopg2
        from psycopg2 import sql

        self._conn = psycopg2.connect(**params)
        self._conn.autocommit = True
        with self._conn.cursor() as cursor:
            cursor.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def notifies(self, *, timeout: float, stop_after: int | None = None) -> list[Notification]:
        """The notifications received within ``timeout`` seconds: as soon as there is one,
        it and any that came with it (``stop_after`` is taken as 1, as the listener asks)."""
        conn = self._conn
        deadline = time.monotonic() + timeout
        conn.poll()  # (what arrived since the last wait)
        while not conn.notifies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable, _, _ = select.select([conn], [], [], remaining)
            if readable:
                conn.poll()
        received = list(conn.notifies)
        conn.notifies.clear()
        return received

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
