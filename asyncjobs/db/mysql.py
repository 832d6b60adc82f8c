"""MariaDB (10.8 and later) and MySQL 8 (statements in ``sql/mysql.sql``).

Neither has partial indexes: Django creates the model's partial indexes there without their
conditions and skips the partial unique constraint on ``unique_key``. Migration 0008 adds
what the queries need instead (``install_mysql_indexes``):

- ``asyncjobs_job_claim_m`` (status, limit_key, queue_name, priority DESC, run_after,
  enqueued_at) and ``asyncjobs_job_claim_all_m`` (the same without the queue; descending
  index parts need MariaDB 10.8+ or MySQL 8, older servers sort instead): a claim reads the
  ready jobs of a queue (or of every queue) in claim order from the index and stops after
  ``limit`` rows, so that InnoDB locks only the rows it hands out (a sort would lock every
  ready job first) and finished jobs are never read.
- ``asyncjobs_job_unique_key_m``: a plain unique index on ``unique_key``. The partial
  constraint elsewhere ("unique where not NULL") is exactly that, since InnoDB's unique
  indexes let any number of NULLs in, and a job's key is set to NULL when it stops holding
  it (when it ends; with ``unique_for``, by the first enqueue of that key after it ran
  out), never left for the index to ignore. A generated column (NULL for finished jobs)
  would instead tie uniqueness to the status, which ``unique_for`` deliberately does not: a
  succeeded job keeps its key for that long.
"""

import contextlib
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models import Model

from asyncjobs.db import fastpath, rows
from asyncjobs.db.base import BaseStrategy, JobId, Start, Success, marks, register
from asyncjobs.db.queries import query
from asyncjobs.models import Attempt, Job, JobStatus

MYSQL_INDEXES = (
    (
        "asyncjobs_job_claim_m",
        "status, limit_key, queue_name, priority DESC, run_after, enqueued_at",
        False,
    ),
    (
        "asyncjobs_job_claim_all_m",
        "status, limit_key, priority DESC, run_after, enqueued_at",
        False,
    ),
    ("asyncjobs_job_unique_key_m", "unique_key", True),
)
# GET_LOCK names are server-wide (and at most 64 characters): the lock's name carries the
# database's, so that two projects (or test databases) on one server never share it.
MYSQL_LOCK_PREFIX = "asyncjobs.maintenance."
# How long an idle worker sleeps between looks at the queue unless the project sets
# POLL_INTERVAL: polling is the only way it learns of new jobs, and a look is one indexed
# read per queue (see MySQLStrategy).
MYSQL_POLL_INTERVAL = timedelta(seconds=0.2)

# Per (alias, number of queues claimed from, 0 for every queue): the claim's locking read.
_PICK_SQL = fastpath.alias_cache()


def _pick_sql(connection: BaseDatabaseWrapper, queues: int) -> str:
    key = (connection.alias, queues)
    sql = _PICK_SQL.get(key)
    if sql is None:
        qn = connection.ops.quote_name
        read = query("mysql", "pick").format(
            columns=rows.columns_sql(connection),
            table=qn(Job._meta.db_table),
            index=qn("asyncjobs_job_claim_m" if queues else "asyncjobs_job_claim_all_m"),
            in_queue="AND queue_name = %s" if queues else "",
        )
        # Several queues: one such read per queue, each locking what it returns, in one
        # statement (one round trip); generated for the number of queues.
        sql = _PICK_SQL[key] = " UNION ALL ".join([f"({read})"] * queues) if queues > 1 else read
    return sql


@register
class MySQLStrategy(BaseStrategy):
    """``SELECT … FOR UPDATE SKIP LOCKED``, then an ``UPDATE`` of the rows it locked, in one
    short transaction.

    Neither server has ``UPDATE … RETURNING``: the locking read returns the jobs' rows, and
    the claim's changes are applied to them as the ``UPDATE`` writes them (nobody else can
    change a row this transaction holds). Several queues are claimed from with one ordered
    read per queue (``UNION ALL``, one statement), and the best ``limit`` of those rows are
    kept: one read over all of them would sort, and lock, every ready job of those queues.
    There is no LISTEN/NOTIFY: workers poll (every ``MYSQL_POLL_INTERVAL`` unless the project
    sets ``POLL_INTERVAL``).
    """

    vendor = "mysql"
    sql = "mysql"
    # InnoDB rolls back the whole transaction it picks to break a deadlock.
    deadlock_keeps_transaction = False
    poll_interval = MYSQL_POLL_INTERVAL

    def _claim(
        self,
        connection: BaseDatabaseWrapper,
        queues: Sequence[str] | None,
        limit: int,
        start: Start,
    ) -> list[Job]:
        names = [] if queues is None else list(dict.fromkeys(queues))
        params: list[rows.Param] = (
            [limit] if queues is None else [v for n in names for v in (n, limit)]
        )
        with transaction.atomic(using=self.alias), connection.cursor() as cursor:
            cursor.execute(_pick_sql(connection, len(names)), params)
            # Best first; rows of other queues past ``limit`` stay unclaimed (their locks go
            # at commit, a moment later).
            jobs = rows.rows_to_jobs(self.alias, connection, cursor.fetchall())[:limit]
            _start_locked(connection, jobs, start)
        return jobs

    @classmethod
    def start_jobs(
        cls, connection: BaseDatabaseWrapper, ids: Sequence[JobId], start: Start
    ) -> list[Job]:
        """See ``base.start_jobs``: lock the given jobs that are still queued, then start
        them as a claim does."""
        sql = query(cls.sql, "pick_given").format(
            columns=rows.columns_sql(connection),
            table=connection.ops.quote_name(Job._meta.db_table),
            ids=marks(len(ids)),
        )
        alias = connection.alias
        with transaction.atomic(using=alias, savepoint=False), connection.cursor() as cursor:
            cursor.execute(sql, [rows.prep(Job, "id", pk, connection) for pk in ids])
            jobs = rows.rows_to_jobs(alias, connection, cursor.fetchall())
            _start_locked(connection, jobs, start)
        return jobs

    @classmethod
    def complete_succeeded(
        cls, connection: BaseDatabaseWrapper, items: Sequence[Success], *, worker_id: str
    ) -> dict[JobId, bool]:
        """See ``base.complete_succeeded``: lock the attempts still open and held by
        ``worker_id`` (and their jobs), then two multi-table ``UPDATE``s join them to the
        batch's values (a derived table of ``SELECT … UNION ALL``: neither server binds
        arrays, and UPDATE has no RETURNING)."""
        qn = connection.ops.quote_name
        tables = {"attempt_table": qn(Attempt._meta.db_table), "table": qn(Job._meta.db_table)}
        numbers = {_as_uuid(job.pk): job.attempts for job, *_ in items}
        with connection.cursor() as cursor:
            cursor.execute(
                query(cls.sql, "open_attempts").format(ids=marks(len(numbers)), **tables),
                [*(rows.prep(Job, "id", pk, connection) for pk in numbers), worker_id],
            )
            closed = {
                pk: bool(has_dependents)
                for job_id, number, has_dependents in cursor.fetchall()
                if numbers.get(pk := _as_uuid(job_id)) == number
            }
        ours = [item for item in items if _as_uuid(item[0].pk) in closed]
        if not ours:
            return {}
        # The batch as a derived table, generated for its number of rows.
        first = (
            "SELECT %s AS did, %s AS dnumber, %s AS dstatus, %s AS dstart, %s AS dend, %s AS dvalue"
        )
        values = " UNION ALL ".join([first] + [f"SELECT {marks(6)}"] * (len(ours) - 1))
        params: list[rows.Param] = []
        for item in ours:
            params += rows.closing_values(connection, item)
            params.append(rows.prep(Job, "return_value", item[1], connection))
        with connection.cursor() as cursor:
            cursor.execute(
                query(cls.sql, "close_attempts").format(values=values, **tables),
                [*params, worker_id],
            )
            cursor.execute(
                query(cls.sql, "finish_jobs").format(values=values, **tables),
                [*params, worker_id],
            )
        return {item[0].pk: closed[_as_uuid(item[0].pk)] for item in ours}

    @classmethod
    def estimated_row_count(cls, connection: BaseDatabaseWrapper, model: type[Model]) -> int | None:
        """See ``base.estimated_row_count``: InnoDB's ``table_rows``."""
        with connection.cursor() as cursor:
            cursor.execute(query(cls.sql, "estimated_row_count"), [model._meta.db_table])
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    @contextlib.contextmanager
    def maintenance_lock(self, *, now: datetime) -> Iterator[bool]:
        """A named lock (``GET_LOCK``) on the session: one worker at a time does maintenance,
        and the server drops the lock if the connection dies. Not a transaction's lock, so
        that the work inside runs in short transactions of its own."""
        connection = connections[self.alias]
        name = mysql_lock_name(str(connection.settings_dict["NAME"]))
        with connection.cursor() as cursor:
            cursor.execute(query(self.sql, "get_lock"), [name])
            (won,) = cursor.fetchone()
        try:
            yield bool(won)
        finally:
            if won:
                with connection.cursor() as cursor:
                    cursor.execute(query(self.sql, "release_lock"), [name])


def _start_locked(connection: BaseDatabaseWrapper, jobs: list[Job], start: Start) -> None:
    """queued → running for ``jobs``, whose rows this transaction has just locked, and their
    attempt rows; the jobs are changed as the ``UPDATE`` writes them."""
    if not jobs:
        return
    worker_id, now, lease_expires_at = start.worker_id, start.now, start.lease_expires_at
    sql = query("mysql", "start").format(
        table=connection.ops.quote_name(Job._meta.db_table), ids=marks(len(jobs))
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                worker_id,
                rows.prep(Job, "lease_expires_at", lease_expires_at, connection),
                rows.prep(Job, "started_at", now, connection),
                rows.prep(Job, "last_attempted_at", now, connection),
                *(rows.prep(Job, "id", job.pk, connection) for job in jobs),
            ],
        )
    for job in jobs:
        job.status = str(JobStatus.RUNNING.value)
        job.worker_id = worker_id
        job.lease_expires_at = lease_expires_at
        job.attempts += 1
        if job.started_at is None:
            job.started_at = now
        job.last_attempted_at = now
    rows.insert_attempts(connection.alias, jobs, start)


def mysql_lock_name(database: str) -> str:
    """The name of the maintenance lock of ``database`` on a MariaDB/MySQL server: the
    database's name, or a digest of it where the name would pass GET_LOCK's 64 characters."""
    name = MYSQL_LOCK_PREFIX + database
    if len(name) > 64:
        name = MYSQL_LOCK_PREFIX + hashlib.sha256(database.encode()).hexdigest()[:40]
    return name


def _as_uuid(value: object) -> uuid.UUID:
    """A job's primary key as read raw from MariaDB (its ``uuid`` type: the dashed text) or
    MySQL (``char(32)``: the hex digits), or as Python holds it."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _on_mysql(schema_editor: BaseDatabaseSchemaEditor) -> bool:
    return bool(schema_editor.connection.vendor == MySQLStrategy.vendor)


def install_mysql_indexes(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create the indexes MariaDB/MySQL need in place of partial ones (see
    ``MYSQL_INDEXES``; MariaDB/MySQL only, a no-op elsewhere)."""
    if not _on_mysql(schema_editor):
        return
    qn = schema_editor.quote_name
    for name, columns, unique in MYSQL_INDEXES:
        schema_editor.execute(
            query("mysql", "create_index").format(
                kind="UNIQUE INDEX" if unique else "INDEX",
                index=qn(name),
                table=qn(Job._meta.db_table),
                columns=columns,
            )
        )


def drop_mysql_indexes(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Remove the indexes ``install_mysql_indexes`` made (MariaDB/MySQL only)."""
    if not _on_mysql(schema_editor):
        return
    qn = schema_editor.quote_name
    for name, _, _ in MYSQL_INDEXES:
        schema_editor.execute(
            query("mysql", "drop_index").format(index=qn(name), table=qn(Job._meta.db_table))
        )


def mysql_isolation_level(alias: str) -> str | None:
    """The isolation level Django's connections to ``alias`` use, in lowercase, if it is
    MariaDB/MySQL (None elsewhere): ``OPTIONS["isolation_level"]``, Django's default
    ``"read committed"`` without it, or the server's default (``"server default"``, InnoDB's
    being REPEATABLE READ) when it is set to None."""
    connection = connections[alias]
    if connection.vendor != MySQLStrategy.vendor:
        return None
    options = connection.settings_dict.get("OPTIONS") or {}
    level = options.get("isolation_level", "read committed")
    return str(level).lower() if level else "server default"
