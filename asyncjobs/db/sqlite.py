"""SQLite: no row locks, no arrays, no LISTEN/NOTIFY (statements in ``sql/sqlite.sql``)."""

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from asyncjobs.db import rows
from asyncjobs.db.base import BaseStrategy, JobId, Start, Success, marks, register
from asyncjobs.db.queries import query
from asyncjobs.models import Attempt, Job

try:  # POSIX: the maintenance lock is a flock on a file beside the database
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


@register
class SQLiteStrategy(BaseStrategy):
    """SQLite has no row locks: pick candidates, then move only rows that are still ready.

    Both steps run in one transaction; with ``transaction_mode="IMMEDIATE"`` it takes the
    write lock up front, so two workers never interleave between the SELECT and the UPDATE
    (and never hit SQLite's lock-upgrade deadlock). The conditional UPDATE keeps the claim
    correct even without it. Workers poll.
    """

    vendor = "sqlite"
    sql = "sqlite"

    @classmethod
    def update_returns_rows(cls, connection: BaseDatabaseWrapper) -> bool:
        """SQLite has ``UPDATE … RETURNING`` from 3.35 on."""
        return sqlite3.sqlite_version_info >= (3, 35)

    def _claim(
        self,
        connection: BaseDatabaseWrapper,
        queues: Sequence[str] | None,
        limit: int,
        start: Start,
    ) -> list[Job]:
        # The index is named: without statistics SQLite read the ready jobs through another
        # index and sorted them all (hundreds of ms at 200,000), and with them it read some
        # queues from the every-queue index, through every other queue's jobs. Several
        # queues are read from the claim index queue by queue, SQLite keeping the best.
        in_queues, index = "", "asyncjobs_job_claim_all"
        if queues is not None:
            index = "asyncjobs_job_claim"
            in_queues = (
                "AND queue_name = %s"
                if len(queues) == 1
                else f"AND queue_name IN ({marks(len(queues))})"
            )
        sql = query(self.sql, "candidates").format(
            table=connection.ops.quote_name(Job._meta.db_table),
            index_hint=self.index_hint(connection, index),
            in_queues=in_queues,
        )
        with transaction.atomic(using=self.alias), connection.cursor() as cursor:
            cursor.execute(sql, [*(queues or ()), limit])
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            return self._start(connection, ids, start)

    @classmethod
    def start_jobs(
        cls, connection: BaseDatabaseWrapper, ids: Sequence[JobId], start: Start
    ) -> list[Job]:
        """See ``base.start_jobs``."""
        db_ids = [rows.prep(Job, "id", pk, connection) for pk in ids]
        return cls._start(connection, db_ids, start)

    @classmethod
    def _start(
        cls, connection: BaseDatabaseWrapper, db_ids: Sequence[rows.Param], start: Start
    ) -> list[Job]:
        """An ``UPDATE … RETURNING`` of the jobs still queued, then their attempt rows, in
        one transaction (the caller's, if it has one). ``db_ids``: the primary keys as the
        database holds them."""
        sql = query(cls.sql, "start").format(
            table=connection.ops.quote_name(Job._meta.db_table),
            ids=marks(len(db_ids)),
            columns=rows.columns_sql(connection),
        )
        alias = connection.alias
        with transaction.atomic(using=alias, savepoint=False), connection.cursor() as cursor:
            cursor.execute(
                sql,
                [
                    start.worker_id,
                    rows.prep(Job, "lease_expires_at", start.lease_expires_at, connection),
                    rows.prep(Job, "started_at", start.now, connection),
                    rows.prep(Job, "last_attempted_at", start.now, connection),
                    *db_ids,
                ],
            )
            jobs = rows.rows_to_jobs(alias, connection, cursor.fetchall())
            rows.insert_attempts(alias, jobs, start)
        return jobs

    @classmethod
    def complete_succeeded(
        cls, connection: BaseDatabaseWrapper, items: Sequence[Success], *, worker_id: str
    ) -> dict[JobId, bool]:
        """See ``base.complete_succeeded``: two statements over ``VALUES`` lists."""
        qn = connection.ops.quote_name
        tables = {"attempt_table": qn(Attempt._meta.db_table), "table": qn(Job._meta.db_table)}
        params = [value for item in items for value in rows.closing_values(connection, item)]
        close = query(cls.sql, "close_attempts").format(
            rows=", ".join([f"({marks(5)})"] * len(items)), **tables
        )
        with connection.cursor() as cursor:
            cursor.execute(close, [*params, worker_id])
            closed = {row[0] for row in cursor.fetchall()}
        ours = [item for item in items if rows.prep(Job, "id", item[0].pk, connection) in closed]
        if not ours:
            return {}
        params = []
        for job, value, _, started, finished in ours:
            params += [
                rows.prep(Job, "id", job.pk, connection),
                rows.prep(Job, "return_value", value, connection),
                rows.prep(Job, "last_attempted_at", started, connection),
                rows.prep(Job, "finished_at", finished, connection),
            ]
        finish = query(cls.sql, "finish_jobs").format(
            rows=", ".join([f"({marks(4)})"] * len(ours)), **tables
        )
        with connection.cursor() as cursor:
            cursor.execute(finish, [*params, worker_id])
            parents = {row[0] for row in cursor.fetchall() if row[1]}
        return {
            item[0].pk: rows.prep(Job, "id", item[0].pk, connection) in parents for item in ours
        }

    @classmethod
    def index_hint(cls, connection: BaseDatabaseWrapper, index: str) -> str:
        """SQLite is told which index to use: without statistics it took another index and
        sorted every ready job. An index that does not exist yet (new code started before
        ``migrate`` added it, or a migration back dropped it) is not named: "INDEXED BY" would
        fail every claim, and without it the claim is only slower. (One lookup in SQLite's
        own schema table per claim: microseconds beside the claim's write transaction.)"""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = %s", [index]
            )
            if cursor.fetchone() is None:
                return ""
        return f" INDEXED BY {connection.ops.quote_name(index)}"

    @contextlib.contextmanager
    def maintenance_lock(self, *, now: datetime) -> Iterator[bool]:
        """One worker at a time does maintenance: an exclusive ``flock`` on a file beside the
        database file (``<name>.asyncjobs-maintenance``), which the OS drops if the process
        dies. For an in-memory database, without ``flock`` (Windows) or where that file cannot
        be opened, every worker may do it: each step is conditional, so doing it twice is
        harmless."""
        name = str(connections[self.alias].settings_dict["NAME"])
        handle = None
        if fcntl is not None and name != ":memory:" and "mode=memory" not in name:
            with contextlib.suppress(OSError):
                handle = open(f"{name}.asyncjobs-maintenance", "ab")  # noqa: SIM115 (closed below)
        if handle is None:
            yield True
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                won = True
            except BlockingIOError:
                won = False
            try:
                yield won
            finally:
                if won:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def is_sqlite_without_immediate(alias: str) -> bool:
    """Whether ``alias`` is SQLite with a transaction mode other than IMMEDIATE."""
    connection = connections[alias]
    if connection.vendor != SQLiteStrategy.vendor:
        return False
    mode = (connection.settings_dict.get("OPTIONS") or {}).get("transaction_mode")
    return (mode or "").upper() != "IMMEDIATE"
