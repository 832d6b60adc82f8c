"""psycopg's own cursor on Django's connection: server-side binding, kept per connection, its
statements in Django's query log, and psycopg's own ``timestamptz`` loader."""

import contextlib
import weakref
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from asyncjobs.db.fastpath.switch import enabled, psycopg3


@contextlib.contextmanager
def query_logged(connection: BaseDatabaseWrapper, sql: str) -> Iterator[None]:
    """An entry in Django's query log, as its own cursors write one, for a statement run on
    psycopg's cursor, when the log is kept (``DEBUG``, or a test capturing queries)."""
    if not connection.queries_logged:
        yield
        return
    with connection.cursor() as wrapper:
        debug_sql = getattr(wrapper, "debug_sql", None)  # Django's CursorDebugWrapper
        with debug_sql(sql) if debug_sql is not None else contextlib.nullcontext():
            yield


def bound(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``bound_cursor`` gives psycopg's own cursor (fast path on, psycopg 3)."""
    return connection.vendor == "postgresql" and psycopg3() and enabled()


# A psycopg ``prepare_threshold`` no statement reaches: none is prepared unless asked (see
# ``execute``).
NEVER_AUTOMATIC = 2**62

# Per Django connection (each belongs to one thread): the psycopg cursor that
# ``bound_cursor(keep=True)`` hands out, kept between calls.
KEPT_CURSORS: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = weakref.WeakKeyDictionary()


# The same for ``bound_cursor(keep=True, native_timestamps=True)`` (the claim's): cursors
# whose adapters load ``timestamptz`` with psycopg's own loader.
KEPT_READERS: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def bound_cursor(
    connection: BaseDatabaseWrapper, *, keep: bool = False, native_timestamps: bool = False
) -> Iterator[Any]:
    """A psycopg cursor with server-side binding on Django's PostgreSQL connection, in its
    current transaction, with errors raised as Django's; Django's own cursor where that is
    not to be had (psycopg2, which binds on the client, or the fast path off).

    For the hot statements: the statement text goes to the server as it is and the values
    travel apart, so nothing is quoted into the text on every call (Django's cursors bind on
    the client). The statement is prepared once the connection's ``prepare_threshold`` says
    so: Django turns that off unless ``OPTIONS`` sets it, for connection poolers. Django's
    ``execute_wrapper`` hooks and query log do not see these.

    ``keep``: the same cursor again on the next call, for as long as Django's connection
    holds the same psycopg connection (making and closing a cursor was a good part of a
    single enqueue's CPU: bench/HISTORY.md, "Single enqueue: a kept cursor"). Its user
    must leave its adapters alone. A use inside another gets a cursor of its own.

    ``native_timestamps``: the cursor loads ``timestamptz`` as ``load_timestamps_natively``
    says, set up when the cursor is made (kept apart from the others when ``keep``).
    """
    if not bound(connection):
        with connection.cursor() as wrapper:
            yield wrapper
        return
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    kept = (KEPT_READERS if native_timestamps else KEPT_CURSORS) if keep else None
    cursor = kept.pop(connection, None) if kept is not None else None
    if cursor is None or cursor.connection is not raw:
        cursor = psycopg.Cursor(raw)
        if native_timestamps:
            load_timestamps_natively(cursor, connection)
    try:
        with connection.wrap_database_errors:
            yield cursor
    finally:
        if kept is not None:
            kept[connection] = cursor
        else:
            cursor.close()


def execute(
    cursor: Any, connection: BaseDatabaseWrapper, sql: str, params: Any, *, prepare: bool
) -> None:
    """Run ``sql`` on ``cursor`` (from ``bound_cursor``). ``prepare``: when the cursor is
    psycopg's own, as a statement prepared on the server, once per connection (psycopg
    keeps it by its text and the types of its values), so that each later call skips the
    server's parse and plan. The caller says whether the connection may hold prepared
    statements (not behind a transaction pooler).

    Django leaves psycopg's ``prepare_threshold`` at None unless ``OPTIONS`` sets it, and
    psycopg then prepares nothing, even when asked. A connection that is to prepare gets a
    threshold no statement reaches instead: psycopg still prepares only what is asked here,
    and it now follows the statements on the connection, so that it forgets its prepared
    ones after a ``DISCARD ALL``, ``DEALLOCATE ALL`` or ``ROLLBACK`` (a pool's reset, say)
    rather than call one the server no longer has."""
    if prepare and bound(connection):
        raw = cursor.connection
        if raw.prepare_threshold is None:
            raw.prepare_threshold = NEVER_AUTOMATIC
        cursor.execute(sql, params, prepare=True)
    else:
        cursor.execute(sql, params)


def execute_kept(connection: BaseDatabaseWrapper, sql: str, params: Any, *, prepare: bool) -> None:
    """``execute`` ``sql`` once on the kept cursor (``bound_cursor(connection, keep=True)``),
    entered in Django's query log (``query_logged``) when that is kept: the single
    enqueue's ``INSERT``. Where nothing is logged and the cursor is psycopg's own, the same
    steps without the two context managers, whose calls were a tenth of the client's CPU
    of an enqueue beyond the driver's own."""
    if connection.queries_logged or not bound(connection):
        with (
            query_logged(connection, sql) if bound(connection) else contextlib.nullcontext(),
            bound_cursor(connection, keep=True) as cursor,
        ):
            execute(cursor, connection, sql, params, prepare=prepare)
        return
    connection.ensure_connection()
    raw = connection.connection
    cursor = KEPT_CURSORS.pop(connection, None)
    if cursor is None or cursor.connection is not raw:
        import psycopg

        cursor = psycopg.Cursor(raw)
    try:
        with connection.wrap_database_errors:
            if prepare:
                if raw.prepare_threshold is None:  # (see ``execute``)
                    raw.prepare_threshold = NEVER_AUTOMATIC
                cursor.execute(sql, params, prepare=True)
            else:
                cursor.execute(sql, params)
    finally:
        KEPT_CURSORS[connection] = cursor


def load_timestamps_natively(cursor: Any, connection: BaseDatabaseWrapper) -> None:
    """Have ``cursor`` (from ``bound_cursor``) load ``timestamptz`` with psycopg's own
    loader where that gives what Django's does. Django wraps psycopg's loader to set each
    value's tzinfo to the connection's; with ``USE_TZ`` and the session in UTC (Django's
    default), psycopg's already sets ``datetime.UTC``, and the wrapper is a Python call per
    value (a claimed job holds several). Nothing to do on Django's cursors."""
    if not bound(connection):
        return
    from psycopg import adapters, pq
    from psycopg.postgres import types

    if connection.timezone is UTC and cursor.connection.info.parameter_status("TimeZone") == "UTC":
        oid = types["timestamptz"].oid
        cursor.adapters.register_loader(oid, adapters.get_loader(oid, pq.Format.TEXT))
