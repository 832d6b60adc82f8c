"""Telling the database's "no more connections" refusals apart from other errors.

A server at its connection limit (PostgreSQL ``max_connections``, a role's or a database's
``CONNECTION LIMIT``, MariaDB/MySQL ``max_connections`` / ``max_user_connections``), a
pooler at its own (PgBouncer ``max_client_conn``) or a client-side pool that timed out
waiting for a free connection says nothing about the job that met it: the worker gives the
attempt back unspent and backs off (see ``asyncjobs.worker.recovery``).
"""

from django.db import DatabaseError, InterfaceError

# PostgreSQL's SQLSTATE for "too many connections" (any of the limits above).
PG_TOO_MANY_CONNECTIONS = "53300"
# MariaDB/MySQL: ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS,
# ER_USER_LIMIT_REACHED (max_connections_per_hour and friends).
MYSQL_TOO_MANY_CONNECTIONS = frozenset({1040, 1203, 1226})
# What the servers and poolers say when the driver has no code to give (a refused connection
# attempt carries the server's message only).
REFUSAL_TEXT = (
    "too many clients already",
    "too many connections",
    "remaining connection slots are reserved",
    "no more connections allowed",
)


def is_too_many_connections(error: BaseException) -> bool:
    """Whether ``error`` is a database error (Django's, or a DB-API driver's
    ``OperationalError``) that refuses a new connection because a connection limit was
    reached, on any vendor, driver or pool. The driver's error Django wrapped is looked at
    too; any other exception (a task's own, whatever its text) is not a refusal, nor is one
    whose attributes raise when read (task code's errors are anyone's objects)."""
    try:
        if not _database_error(error):
            return False
        seen = 0
        current: BaseException | None = error
        while current is not None and seen < 5:
            if _refusal(current):
                return True
            cause = current.__cause__  # (not ``or``: an error's __bool__ may raise)
            current = cause if cause is not None else current.__context__
            seen += 1
    except Exception:
        return False
    return False


def _database_error(error: BaseException) -> bool:
    if isinstance(error, DatabaseError | InterfaceError):
        return True
    # A driver's own error, raised by task code that used the driver directly.
    return any(cls.__name__ in ("OperationalError", "PoolTimeout") for cls in type(error).__mro__)


def _refusal(error: BaseException) -> bool:
    if getattr(error, "sqlstate", None) == PG_TOO_MANY_CONNECTIONS:
        return True
    pgcode = getattr(error, "pgcode", None)  # psycopg2
    if pgcode == PG_TOO_MANY_CONNECTIONS:
        return True
    # psycopg_pool.PoolTimeout: every connection of a client-side pool is in use.
    if type(error).__name__ == "PoolTimeout":
        return True
    args = getattr(error, "args", ())
    if args and type(args[0]) is int and args[0] in MYSQL_TOO_MANY_CONNECTIONS:
        return True
    text = str(error).lower()
    return any(phrase in text for phrase in REFUSAL_TEXT)


# PostgreSQL's SQLSTATE for a deadlock the server broke by failing one transaction.
PG_DEADLOCK = "40P01"
# MariaDB/MySQL: ER_LOCK_DEADLOCK (InnoDB then rolls back the whole transaction).
MYSQL_DEADLOCK = 1213


def is_deadlock(error: BaseException) -> bool:
    """Whether ``error`` is the database breaking a deadlock (PostgreSQL ``40P01``,
    MariaDB/MySQL 1213), through Django's wrapper or the driver's own error: the transaction
    it failed did nothing and may be tried again from its start."""
    if not _database_error(error):
        return False
    current: BaseException | None = error
    for _ in range(5):
        if current is None:
            return False
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        args = getattr(current, "args", ())
        if code == PG_DEADLOCK or (args and type(args[0]) is int and args[0] == MYSQL_DEADLOCK):
            return True
        current = current.__cause__ or current.__context__
    return False
