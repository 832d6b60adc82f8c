"""Everything that depends on the database vendor, behind one small interface.

``for_alias(alias)`` returns a ``ClaimStrategy`` for a database alias:

- ``claim()`` moves up to ``limit`` ready jobs to ``running`` for one worker and records the
  start of their attempts, in one short transaction, and returns them best first.
- ``listen()`` returns a ``Listener`` whose ``wait()`` blocks until jobs may have become ready
  or a queue was paused or resumed (PostgreSQL ``LISTEN``), or the timeout passes (SQLite,
  MariaDB/MySQL, or any fallback); it returns what was announced (``notification_kind``).
- ``maintenance_lock(now=...)`` is a context manager that yields whether this process won the
  cluster-wide lock for maintenance work.

One function per state transition, whichever path takes it: ``start_jobs()`` (queued →
running with the attempt rows, the very statements of ``claim()``, for jobs a caller chose)
and ``complete_succeeded()`` (running → succeeded, ``unique_key`` released, for a batch or a
single job). ``insert_jobs()`` stores new jobs.

The package: ``base`` (the protocol, what the vendors share, the functions that pick a
vendor's way), ``postgresql`` (with ``postgresql_psycopg2``), ``sqlite``, ``mysql``, ``rows``
(jobs from rows and rows from jobs), ``fastpath`` (every reach past Django's and psycopg's
public API, behind ``ASYNCJOBS["FAST_PATH"]``), ``queries`` and ``sql/*.sql`` (the statements'
text). Nothing outside this package looks at ``connection.vendor`` or writes SQL.
"""

from asyncjobs.db.base import (
    MAINTENANCE_LEASE,
    NOTIFY_CHANNEL,
    NOTIFY_KEYED,
    NOTIFY_QUEUE,
    NOTIFY_READY,
    BaseStrategy,
    ClaimStrategy,
    JobId,
    JobPk,
    Listener,
    PollingListener,
    announce_queue_change,
    complete_succeeded,
    complete_succeeded_counting,
    count_batch_ends,
    deadlock_keeps_transaction,
    default_poll_interval,
    estimated_row_count,
    for_alias,
    insert_jobs,
    notification_kind,
    ready_queues,
    start_jobs,
    vendor_name,
    vendor_supported,
)
from asyncjobs.db.errors import is_deadlock, is_too_many_connections
from asyncjobs.db.fastpath import JSON_SCALARS, psycopg3
from asyncjobs.db.mysql import (
    MYSQL_INDEXES,
    MYSQL_LOCK_PREFIX,
    MYSQL_POLL_INTERVAL,
    MySQLStrategy,
    drop_mysql_indexes,
    install_mysql_indexes,
    mysql_isolation_level,
    mysql_lock_name,
)
from asyncjobs.db.postgresql import (
    COPY_CHUNK,
    COPY_MIN_ROWS,
    PostgresListener,
    PostgresStrategy,
    drop_notify_triggers,
    execute_on_postgresql,
    install_notify_functions,
    install_notify_triggers,
)
from asyncjobs.db.postgresql_psycopg2 import Psycopg2Listening
from asyncjobs.db.sessions import left_in_transaction
from asyncjobs.db.sqlite import SQLiteStrategy, is_sqlite_without_immediate

__all__ = [
    "COPY_CHUNK",
    "COPY_MIN_ROWS",
    "JSON_SCALARS",
    "MAINTENANCE_LEASE",
    "MYSQL_INDEXES",
    "MYSQL_LOCK_PREFIX",
    "MYSQL_POLL_INTERVAL",
    "NOTIFY_CHANNEL",
    "NOTIFY_KEYED",
    "NOTIFY_QUEUE",
    "NOTIFY_READY",
    "BaseStrategy",
    "ClaimStrategy",
    "JobId",
    "JobPk",
    "Listener",
    "MySQLStrategy",
    "PollingListener",
    "PostgresListener",
    "PostgresStrategy",
    "Psycopg2Listening",
    "SQLiteStrategy",
    "announce_queue_change",
    "complete_succeeded",
    "complete_succeeded_counting",
    "count_batch_ends",
    "deadlock_keeps_transaction",
    "default_poll_interval",
    "drop_mysql_indexes",
    "drop_notify_triggers",
    "estimated_row_count",
    "execute_on_postgresql",
    "for_alias",
    "insert_jobs",
    "install_mysql_indexes",
    "install_notify_functions",
    "install_notify_triggers",
    "is_deadlock",
    "is_sqlite_without_immediate",
    "is_too_many_connections",
    "left_in_transaction",
    "mysql_isolation_level",
    "mysql_lock_name",
    "notification_kind",
    "psycopg3",
    "ready_queues",
    "start_jobs",
    "vendor_name",
    "vendor_supported",
]
