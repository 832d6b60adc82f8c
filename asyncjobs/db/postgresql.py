"""PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims, ``COPY``, ``LISTEN/NOTIFY`` (statements in
``sql/postgresql.sql``).

On psycopg 3 with the fast path on, the hot statements use psycopg's own API (server-side
binding, a kept cursor, binary arrays, its ``COPY`` and ``notifies``; see
``asyncjobs.db.fastpath``). With psycopg2 as Django's driver the same statements run on
Django's cursors, through ``copy_expert`` and ``poll()`` (``asyncjobs.db.postgresql_psycopg2``).
"""

import contextlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models import Model

from asyncjobs.conf import jobs_settings
from asyncjobs.db import fastpath, rows
from asyncjobs.db.base import (
    MAINTENANCE_LEASE,
    NOTIFY_CHANNEL,
    NOTIFY_KEYED,
    NOTIFY_QUEUE,
    NOTIFY_READY,
    BaseStrategy,
    BatchCount,
    JobId,
    Listener,
    PollingListener,
    Start,
    Success,
    batch_state,
    register,
)
from asyncjobs.db.postgresql_psycopg2 import (
    ListeningConnection,
    Psycopg2Listening,
    copy_jobs_psycopg2,
)
from asyncjobs.db.queries import query
from asyncjobs.models import Attempt, Batch, BatchTally, Job, Lease, storable_json_text

logger = logging.getLogger(__name__)

# From this many jobs on, PostgreSQL gets them through COPY. Two rows by COPY took less time
# than two by one multi-row INSERT (bulk_create) or by a pipelined executemany; see
# bench/README.md.
COPY_MIN_ROWS = 2
# Rows formatted per write to COPY.
COPY_CHUNK = 1000

# Per (alias, what picks the jobs): the text of the statement that starts them.
_START_SQL = fastpath.alias_cache()
# Per alias: whether its connections may hold prepared statements (see ``prepares``).
_PREPARES = fastpath.alias_cache()


def pooled(alias: str) -> bool:
    """Whether ``alias``'s connections go through a transaction-pooling pooler
    (``POOL_MODE``; detected from ``DISABLE_SERVER_SIDE_CURSORS`` when not set)."""
    mode = jobs_settings.POOL_MODE
    if mode is None:
        return bool(connections[alias].settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"))
    return mode == "transaction"


def prepares(alias: str) -> bool:
    """Whether the hot statements (the claim's, the single enqueue's) run prepared on the
    server: unless a transaction pooler stands between (a statement prepared on one server
    connection is unknown on the next; PgBouncer before 1.21 passes none)."""
    answer = _PREPARES.get(alias)
    if answer is None:
        answer = _PREPARES[alias] = not pooled(alias)
    return answer


class GenericPlans:
    """The worker's claim statements on generic plans, made afresh when they may be stale.

    A prepared statement whose parameters change its plan (the claim's limit) is planned
    again on every call under PostgreSQL's default ``plan_cache_mode``: the claim of one job
    spent ~0.4 ms planning on the server, about a third of its backend CPU and an eighth of
    the enqueue-to-start latency on an idle machine (bench/HISTORY.md, "Generic plans for
    the claim"). Its generic plan is as good wherever the table's statistics are
    (tests/test_claim_plans.py), but it is kept until the next ``ANALYZE``: one made while
    the table was nearly empty reads it sequentially, and after a burst of 100,000 jobs took
    56 to 167 ms per claim until autovacuum came round. So on the connections of a worker's
    own threads (``BaseStrategy.worker_connections``: its main loop and listener, which run
    no task code), where asyncjobs alone prepares statements (the connection's
    ``prepare_threshold`` is not the project's, nor are Django's queries bound on the
    server), the session plans prepared statements generically, and the claims' plans are
    dropped (``DISCARD PLANS``: the statements stay prepared, on the server and in psycopg's
    list alike, whatever psycopg's version) to be made again from the table as it is now:
    after a claim that took ``STALE_AFTER`` or more, and every ``REPLAN_EVERY``."""

    # A claim this slow has its plan made again (at most once per ``MIN_REPLAN_GAP``): a
    # stale plan's sequential read takes tens of ms from ~100,000 rows on; a claim on a
    # current plan, a few ms even on a loaded machine.
    STALE_AFTER = 0.025
    MIN_REPLAN_GAP = 1.0
    # Plans follow the table at least this often (seconds) whatever the claims' speed.
    REPLAN_EVERY = 60.0

    # Per psycopg connection in generic mode: when its plans were last dropped (or the mode
    # set).
    _SESSIONS: ClassVar[weakref.WeakKeyDictionary[Any, float]] = weakref.WeakKeyDictionary()

    @classmethod
    def applies(cls, connection: BaseDatabaseWrapper) -> bool:
        """Whether ``connection``'s claims may run on generic plans: prepared (see
        ``prepares``) on psycopg's own cursor, asyncjobs the only one preparing there (no
        ``prepare_threshold`` of the project's, whose statements keep their plans), not
        with Django's queries bound on the server (``OPTIONS["server_side_binding"]``: the
        ORM's reads there, such as ``status = $1``, would lose their partial indexes to a
        generic plan), and not from Django's connection pool (``OPTIONS["pool"]``), whose
        connections go on to the slot threads' task code with their session's settings."""
        if not (prepares(connection.alias) and fastpath.bound(connection)):
            return False
        options = connection.settings_dict.get("OPTIONS", {})
        if options.get("pool") or options.get("server_side_binding"):
            return False
        connection.ensure_connection()
        threshold = connection.connection.prepare_threshold
        return threshold is None or threshold == fastpath.NEVER_AUTOMATIC

    @classmethod
    def before_claim(cls, connection: BaseDatabaseWrapper) -> None:
        """Put the session in generic mode before its first claim outside a transaction,
        where that ``applies`` (asked once per session: a session in generic mode is not
        asked again); drop its plans when ``REPLAN_EVERY`` has passed since they were
        made."""
        raw = connection.connection
        planned = cls._SESSIONS.get(raw) if cls._SESSIONS and raw is not None else None
        now = time.monotonic()
        if planned is None:
            if connection.in_atomic_block or not connection.get_autocommit():
                return  # a SET there would go with the transaction's rollback: later
            if not cls.applies(connection):
                return
            raw = connection.connection  # (applies connects if need be)
            with connection.wrap_database_errors:
                raw.execute("SET plan_cache_mode = force_generic_plan")
            cls._SESSIONS[raw] = now
        elif now - planned >= cls.REPLAN_EVERY:
            cls._replan(connection, now)

    @classmethod
    def after_claim(cls, connection: BaseDatabaseWrapper, took: float) -> None:
        """Drop the plans of a session in generic mode after a claim (any start statement,
        the keyed claims' too) that ``took`` ``STALE_AFTER`` or more."""
        if took < cls.STALE_AFTER or not cls._SESSIONS:
            return
        planned = cls._SESSIONS.get(connection.connection)
        if planned is not None:
            now = time.monotonic()
            if now - planned >= cls.MIN_REPLAN_GAP:
                cls._replan(connection, now)

    @classmethod
    def _replan(cls, connection: BaseDatabaseWrapper, now: float) -> None:
        # The statements stay prepared; the server plans each again at its next run, from
        # the table as it is then. (Not DEALLOCATE ALL: psycopg before 3.3 would not see it
        # and would go on running statements the server no longer has.)
        with connection.wrap_database_errors:
            connection.connection.execute("DISCARD PLANS")
        cls._SESSIONS[connection.connection] = now


def _start_sql(connection: BaseDatabaseWrapper, picked: str) -> str:
    """The ``start`` statement around the ``picked`` query, built once per database (and
    ``DURABLE_CLAIMS``)."""
    commit = "on" if jobs_settings.DURABLE_CLAIMS else "off"
    key = (connection.alias, picked, commit)
    sql = _START_SQL.get(key)
    if sql is None:
        qn = connection.ops.quote_name
        table = qn(Job._meta.db_table)
        sql = _START_SQL[key] = query("postgresql", "start").format(
            commit=commit,
            picked=query("postgresql", picked).format(table=table),
            table=table,
            attempt_table=qn(Attempt._meta.db_table),
            claimed_columns=rows.columns_sql(connection, "j."),
            columns=rows.columns_sql(connection),
        )
    return sql


def _tables(connection: BaseDatabaseWrapper) -> dict[str, str]:
    qn = connection.ops.quote_name
    return {
        "attempt_table": qn(Attempt._meta.db_table),
        "table": qn(Job._meta.db_table),
        "batch_table": qn(Batch._meta.db_table),
        "tally_table": qn(BatchTally._meta.db_table),
    }


def _complete_sql(connection: BaseDatabaseWrapper, counting: bool) -> str:
    """``complete_succeeded``'s text, with the batch-counting step or without (one text each,
    so that each can be prepared)."""
    fragments = dict.fromkeys(("counting", "nothing", "counted"), "")
    if counting:
        fragments = {
            name: query("postgresql", f"complete_succeeded_{name}").format(**_tables(connection))
            for name in fragments
        }
        fragments["counting"] = "\n" + fragments["counting"]
        fragments["counted"] = "\n" + fragments["counted"]
    return query("postgresql", "complete_succeeded").format(**_tables(connection), **fragments)


def _batch_sql(connection: BaseDatabaseWrapper, name: str) -> str:
    return query("postgresql", name).format(**_tables(connection))


@register
class PostgresStrategy(BaseStrategy):
    """PostgreSQL: one statement claims with ``FOR UPDATE SKIP LOCKED`` and records attempts.

    Concurrent workers skip each other's locked rows instead of queueing behind them. New
    work is announced by triggers (``install_notify_triggers``) with ``pg_notify``, which
    PostgreSQL delivers on commit, so a worker never wakes for a job it cannot see yet.
    """

    vendor = "postgresql"
    sql = "postgresql"

    def __init__(self, alias: str) -> None:
        super().__init__(alias)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def _claim(
        self,
        connection: BaseDatabaseWrapper,
        queues: Sequence[str] | None,
        limit: int,
        start: Start,
    ) -> list[Job]:
        sql = _start_sql(connection, "pick_every_queue" if queues is None else "pick_queues")
        params: dict[str, object] = {
            "queues": list(queues) if queues is not None else None,
            "limit": limit,
        }
        if self.worker_connections:
            GenericPlans.before_claim(connection)
        return self._run_start(connection, sql, params, start)

    @classmethod
    def start_jobs(
        cls, connection: BaseDatabaseWrapper, ids: Sequence[JobId], start: Start
    ) -> list[Job]:
        """See ``base.start_jobs``: the claim's statement, over the given ids."""
        sql = _start_sql(connection, "pick_given")
        params: dict[str, object] = {"ids": [rows.prep(Job, "id", pk, connection) for pk in ids]}
        return cls._run_start(connection, sql, params, start)

    @classmethod
    def _run_start(
        cls, connection: BaseDatabaseWrapper, sql: str, params: dict[str, object], start: Start
    ) -> list[Job]:
        params.update(worker=start.worker_id, lease=start.lease_expires_at, now=start.now)
        with fastpath.bound_cursor(connection, keep=True, native_timestamps=True) as cursor:
            began = time.monotonic()
            fastpath.execute(cursor, connection, sql, params, prepare=prepares(connection.alias))
            found = cursor.fetchall()
            GenericPlans.after_claim(connection, time.monotonic() - began)
        return rows.rows_to_jobs(connection.alias, connection, found)

    @classmethod
    def complete_succeeded(
        cls, connection: BaseDatabaseWrapper, items: Sequence[Success], *, worker_id: str
    ) -> dict[JobId, bool]:
        """See ``base.complete_succeeded``: one statement of fixed text (the batch travels as
        arrays), so it can be prepared, and one round trip. With psycopg's own cursor the
        arrays go in binary format, which psycopg writes more cheaply than text arrays
        (bench/HISTORY.md, "Worker CPU per job")."""
        return {
            row[0]: bool(row[1])
            for row in cls._complete(connection, items, worker_id, counting=False)
        }

    @classmethod
    def complete_succeeded_counting(
        cls, connection: BaseDatabaseWrapper, items: Sequence[Success], *, worker_id: str
    ) -> tuple[dict[JobId, bool], list[BatchCount]]:
        """See ``base.complete_succeeded_counting``: for jobs of one batch, the count moves in
        the completion's own statement, which never waits for the batch row's lock (SKIP
        LOCKED: a BatchTally instead); for several, as the other databases do (one UPDATE per
        batch, in the order of their ids, so that concurrent flushes lock the batch rows in
        one order, and a flush never waits for one batch while holding another)."""
        if len({job.batch_id for job, *_ in items} - {None}) > 1:
            return super().complete_succeeded_counting(connection, items, worker_id=worker_id)
        recorded: dict[JobId, bool] = {}
        counted = []
        for job_id, has_dependents, batch_id, held, *state in cls._complete(
            connection, items, worker_id, counting=True
        ):
            if job_id is not None:
                recorded[job_id] = bool(has_dependents)
            else:
                counted.append(BatchCount(batch_id, held, *batch_state(state)))
        return recorded, counted

    @classmethod
    def count_batch_ends(
        cls,
        connection: BaseDatabaseWrapper,
        batch_id: Any,
        succeeded: int,
        failed: int,
        cancelled: int,
    ) -> BatchCount | None:
        """See ``base.count_batch_ends``: the row's lock first, in a statement of its own
        (waiting for any transaction that holds it), then one statement that deletes the
        batch's tallies and adds them and this count to the row: its snapshot, taken after
        the lock, sees every tally committed before."""
        params = {
            "batch": rows.prep(Batch, "id", batch_id, connection),
            "ended": succeeded + failed + cancelled,
            "succeeded": succeeded,
            "failed": failed,
            "cancelled": cancelled,
        }
        with connection.cursor() as cursor:
            cursor.execute(_batch_sql(connection, "lock_batch"), params)
            if cursor.fetchone() is None:
                return None
            cursor.execute(_batch_sql(connection, "count_batch_ends"), params)
            row = cursor.fetchone()
        return None if row is None else BatchCount(batch_id, True, *batch_state(row))

    @classmethod
    def _complete(
        cls,
        connection: BaseDatabaseWrapper,
        items: Sequence[Success],
        worker_id: str,
        *,
        counting: bool,
    ) -> list[Any]:
        sql = _complete_sql(connection, counting)
        params = {
            "ids": [job.pk for job, *_ in items],
            "numbers": [job.attempts for job, *_ in items],
            "statuses": [status for _, _, status, _, _ in items],
            "starts": [started for *_, started, _ in items],
            "ends": [finished for *_, finished in items],
            # The JSON text the ORM stores (JSONField without an encoder); NULL for None.
            "values": [
                None if value is None else storable_json_text(json.dumps(value), value)
                for _, value, *_ in items
            ],
            "worker": worker_id,
        }
        if not fastpath.bound(connection):  # Django's cursors: arrays as ARRAY[...] literals
            sql = sql.replace(")b::", ")s::")
        with fastpath.bound_cursor(connection) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    @classmethod
    def insert_jobs(cls, connection: BaseDatabaseWrapper, jobs: Iterable[Job]) -> list[Job]:
        """See ``base.insert_jobs``: one job by the cached ``INSERT``, on the kept psycopg
        cursor; more by ``COPY``, ``COPY_CHUNK`` jobs at a time from ``jobs`` (the next jobs
        are built while PostgreSQL stores the last ones). The statements run on psycopg's
        cursor: Django's query log (``DEBUG``, a test's query count) gets an entry for each,
        its ``execute_wrapper`` hooks do not see them."""
        rest = iter(jobs)
        given = list(itertools.islice(rest, COPY_MIN_ROWS))
        if not given:
            return given
        if len(given) >= COPY_MIN_ROWS:
            statement = query(cls.sql, "copy").format(
                table=connection.ops.quote_name(Job._meta.db_table),
                columns=", ".join(rows.copy_layout(connection)[0]),
            )
            if fastpath.psycopg3():
                given = _copy_jobs(connection, statement, given, rest)
            else:
                given = copy_jobs_psycopg2(connection, statement, given, rest, COPY_CHUNK)
        else:
            fastpath.execute_kept(
                connection,
                cls.insert_sql(connection),
                fastpath.row(given[0], connection),
                prepare=prepares(connection.alias),
            )
        fastpath.mark_saved(given, connection.alias)
        return given

    @classmethod
    def update_returns_rows(cls, connection: BaseDatabaseWrapper) -> bool:
        """PostgreSQL has ``UPDATE … RETURNING``."""
        return True

    @classmethod
    def estimated_row_count(cls, connection: BaseDatabaseWrapper, model: type[Model]) -> int | None:
        """See ``base.estimated_row_count``: ``pg_class.reltuples``."""
        with connection.cursor() as cursor:
            cursor.execute(query(cls.sql, "estimated_row_count"), [model._meta.db_table])
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None

    @classmethod
    def announce_queue_change(cls, connection: BaseDatabaseWrapper, name: str) -> None:
        """See ``base.announce_queue_change``: a ``pg_notify``, delivered at commit."""
        with connection.cursor() as cursor:
            cursor.execute(query(cls.sql, "notify"), [NOTIFY_CHANNEL, f"{NOTIFY_QUEUE}:{name}"])

    def listen(self, on_error: Callable[[BaseException], None] | None = None) -> Listener:
        """A LISTEN connection of its own (Django's connections are per thread), to
        ``LISTEN_DATABASE`` if set. Behind a transaction-pooling pooler without one, LISTEN
        would hear only while it happened to keep its server connection: the worker polls
        instead (and says so once)."""
        direct = jobs_settings.LISTEN_DATABASE
        if direct is None and self.pooled():
            logger.warning(
                "asyncjobs: database %r goes through a transaction-pooling pooler and no "
                "LISTEN_DATABASE is set: workers poll every POLL_INTERVAL instead of "
                "listening for new jobs",
                self.alias,
            )
            return PollingListener()
        return PostgresListener(direct or self.alias, NOTIFY_CHANNEL, on_error)

    @contextlib.contextmanager
    def maintenance_lock(self, *, now: datetime) -> Iterator[bool]:
        """One worker at a time does maintenance: a lease row (``Lease``), taken in one short
        transaction for ``LEASE_DURATION`` and ended after the block, or at its expiry if the
        worker dies first.
        Not a session advisory lock: behind a transaction-pooling pooler (PgBouncer) a
        session belongs to whichever client has the server connection next, so two workers
        could both hold it, or nobody take it again."""
        leases = Lease.objects.using(self.alias)
        won = leases.take(
            MAINTENANCE_LEASE,
            holder=self.holder,
            # As long as a job's lease: a worker that dies holding it delays no rescue (its
            # jobs' leases expire no sooner), and a round takes a second or two at most.
            duration=jobs_settings.LEASE_DURATION,
            now=now,
        )
        try:
            yield won
        finally:
            if won:
                leases.end(MAINTENANCE_LEASE, holder=self.holder)

    @property
    def announces(self) -> bool:
        """Whether new jobs are announced: unless the worker must poll (see ``listen``)."""
        return jobs_settings.LISTEN_DATABASE is not None or not self.pooled()

    def pooled(self) -> bool:
        """Whether connections go through a transaction-pooling pooler (see ``pooled``)."""
        return pooled(self.alias)


def _copy_jobs(
    connection: BaseDatabaseWrapper, statement: str, given: list[Job], rest: Iterator[Job]
) -> list[Job]:
    """``COPY`` on psycopg 3's own cursor. Returns every job stored."""
    memo: dict[tuple[int, ...], str] = {}  # (``stored`` keeps the jobs alive meanwhile)
    stored: list[Job] = []
    with (
        fastpath.query_logged(connection, statement),
        fastpath.bound_cursor(connection) as cursor,
        cursor.copy(statement) as copy,
    ):
        chunk = given + list(itertools.islice(rest, COPY_CHUNK - len(given)))
        while chunk:
            stored.extend(chunk)
            copy.write(rows.copy_lines(chunk, connection, memo))
            chunk = list(itertools.islice(rest, COPY_CHUNK))
    return stored


class PostgresListener:
    """Waits for NOTIFY on the asyncjobs channel; reconnects on failure, falling back to
    plain sleeping meanwhile."""

    def __init__(
        self, alias: str, channel: str, on_error: Callable[[BaseException], None] | None
    ) -> None:
        self.alias = alias
        self.channel = channel
        self.on_error = on_error
        self._conn: ListeningConnection | None = None
        self._closed = threading.Event()

    def _connect(self) -> ListeningConnection:
        params = connections[self.alias].get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(key, None)
        if not fastpath.psycopg3():
            return Psycopg2Listening(params, self.channel)
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(**params, autocommit=True)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        return conn

    def wait(self, timeout: float) -> list[str]:
        """Block until a notification arrives or ``timeout`` seconds pass; the payloads of
        the notifications received (those that came together with the first one too)."""
        if self._closed.is_set():
            return []
        try:
            if self._conn is None:
                self._conn = self._connect()
            return [note.payload for note in self._conn.notifies(timeout=timeout, stop_after=1)]
        except Exception as exc:  # any driver error: fall back to sleeping, retry next time
            if self._closed.is_set():
                return []  # closed from another thread while waiting
            if self.on_error:
                self.on_error(exc)
            self._drop()
            self._closed.wait(timeout)
            return []

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Close the connection; further waits return at once."""
        self._closed.set()
        self._drop()


def _on_postgresql(schema_editor: BaseDatabaseSchemaEditor) -> bool:
    return bool(schema_editor.connection.vendor == PostgresStrategy.vendor)


def install_notify_functions(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create or replace the NOTIFY triggers' functions (PostgreSQL only; a no-op
    elsewhere)."""
    if _on_postgresql(schema_editor):
        schema_editor.execute(
            query("postgresql", "notify_functions").format(
                channel=NOTIFY_CHANNEL, ready=NOTIFY_READY, keyed=NOTIFY_KEYED
            )
        )


def install_notify_triggers(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Create the NOTIFY triggers (PostgreSQL only; a no-op elsewhere): installed by
    migration 0001, their functions brought to this version by 0004."""
    if _on_postgresql(schema_editor):
        install_notify_functions(schema_editor)
        table = schema_editor.quote_name(Job._meta.db_table)
        schema_editor.execute(query("postgresql", "notify_triggers").format(table=table))


def drop_notify_triggers(schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Remove the NOTIFY triggers (PostgreSQL only; a no-op elsewhere)."""
    if _on_postgresql(schema_editor):
        table = schema_editor.quote_name(Job._meta.db_table)
        schema_editor.execute(query("postgresql", "drop_notify_triggers").format(table=table))


def execute_on_postgresql(schema_editor: BaseDatabaseSchemaEditor, sql: str) -> None:
    """Run ``sql`` through ``schema_editor`` on PostgreSQL only (a migration's own
    PostgreSQL-only step)."""
    if _on_postgresql(schema_editor):
        schema_editor.execute(sql)
