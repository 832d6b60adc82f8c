"""The strategy protocol every database implements, the code its vendors share, and the
functions that pick a vendor's way for an alias.

``for_alias(alias)`` returns a ``ClaimStrategy`` (``BaseStrategy``). Each vendor's class
(``PostgresStrategy``, ``SQLiteStrategy``, ``MySQLStrategy``) derives from ``BaseStrategy``,
which states the protocol and keeps the checks and defaults they share; the operations that
need no worker state (inserting jobs, starting given jobs, completing a batch, announcing a
change, estimating a count) are class methods taking the connection, which the module
functions below call for the connection's vendor.
"""

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

from asyncjobs.db import fastpath, rows
from asyncjobs.db.queries import query
from asyncjobs.models import Batch, Job

# The LISTEN/NOTIFY channel the PostgreSQL triggers announce ready jobs on, and
# ``announce_queue_change`` a paused or resumed queue. A payload is "<kind>:<queue name>":
# a job became ready; a job under a per-task or per-key limit became ready (see
# ``services.claim_keyed``); a queue was paused or resumed.
NOTIFY_CHANNEL = "asyncjobs"
NOTIFY_READY = "ready"
NOTIFY_KEYED = "keyed"
NOTIFY_QUEUE = "queue"
# The lease row of the workers' maintenance (PostgreSQL).
MAINTENANCE_LEASE = "maintenance"


@dataclass(frozen=True, slots=True)
class Start:
    """What moving jobs from queued to running writes, whichever path does it: the worker
    that takes them, when, and for how long (the lease)."""

    worker_id: str
    now: datetime
    lease: timedelta

    @property
    def lease_expires_at(self) -> datetime:
        """When the worker's hold on the jobs ends unless its heartbeat extends it."""
        return self.now + self.lease


@dataclass(frozen=True, slots=True)
class BatchCount:
    """What counting ended jobs did to one batch (``count_batch_ends``,
    ``complete_succeeded_counting``).

    ``held``: this transaction holds the batch row's lock, and the count (with every tally
    left by others that it could see) is on the row; ``pending`` is then the row's. Else
    (PostgreSQL, when another transaction held the row) the count went into a
    ``BatchTally`` row, and ``pending`` is what this transaction's snapshot showed left,
    which misses what others had not committed yet.
    """

    batch_id: Any
    held: bool
    pending: int
    sealed: bool
    finished: bool

    @property
    def finishable(self) -> bool:
        """Whether the batch may finish now, in this transaction: its row is held, it is
        sealed, not finished, and nothing of it is pending."""
        return self.held and self.pending == 0 and self.sealed and not self.finished


# A successful attempt for ``complete_succeeded``: (job, its JSON return value, HTTP status or
# None, started at or None, finished at).
Success = tuple[Job, object, int | None, datetime | None, datetime]

# A job's primary key; and a job's id as callers may give it (the key, or its text).
JobPk: TypeAlias = uuid.UUID
JobId: TypeAlias = uuid.UUID | str


class Listener(Protocol):
    """Something a worker can sleep on until new jobs may be ready."""

    def wait(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` seconds; the payloads of the notifications that woke it
        (none: the time passed)."""

    def close(self) -> None:
        """Release the listener's resources."""


def notification_kind(payload: str) -> str:
    """What a notification announces: ``NOTIFY_READY``, ``NOTIFY_KEYED`` or
    ``NOTIFY_QUEUE``. A payload in another form (a bare queue name, as the triggers sent
    before migration 0004) announces a ready job."""
    kind, colon, _ = payload.partition(":")
    return kind if colon and kind in (NOTIFY_KEYED, NOTIFY_QUEUE) else NOTIFY_READY


class PollingListener:
    """A listener that only sleeps: where there is no LISTEN/NOTIFY, or as the fallback."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, timeout: float) -> list[str]:
        """Sleep ``timeout`` seconds (or until ``close``)."""
        self._event.wait(timeout)
        return []

    def close(self) -> None:
        """Wake any sleeper for good."""
        self._event.set()


class BaseStrategy:
    """The vendor-specific operations of the queue that a worker holds on to (the strategy
    protocol), and what the vendors' strategies share: each derives from this class and
    overrides what its database does its own way. ``vendor`` is Django's name for the
    database (``connection.vendor``), ``sql`` the file of its statements
    (``sql/<sql>.sql``)."""

    vendor: ClassVar[str]
    sql: ClassVar[str]
    # The poll interval the database calls for where the project sets none (None:
    # ``POLL_INTERVAL``'s default).
    poll_interval: ClassVar[timedelta | None] = None
    # Whether a deadlock the database breaks fails only the statement, so that rolling back
    # to a savepoint leaves the rest of the transaction usable (PostgreSQL; SQLite has none),
    # rather than the whole transaction (InnoDB).
    deadlock_keeps_transaction: ClassVar[bool] = True

    def __init__(self, alias: str) -> None:
        self.alias = alias
        # Set by a worker (``Runner``): this strategy claims on the connections of the
        # worker's own threads (main loop, listener), which run no task code, so that their
        # sessions may be set up for the claim alone (PostgreSQL: ``GenericPlans``).
        self.worker_connections = False

    @property
    def announces(self) -> bool:
        """Whether listeners are told at once of ready jobs and paused or resumed queues
        (otherwise a worker must look for them): not unless the database can notify."""
        return False

    def claim(
        self,
        *,
        queues: Sequence[str] | None,
        limit: int,
        worker_id: str,
        now: datetime,
        lease: timedelta,
    ) -> list[Job]:
        """Claim up to ``limit`` ready jobs of ``queues`` (None: any queue) for
        ``worker_id``: move them to ``running`` and record the start of their attempts, in
        one short transaction; best first. Jobs under a per-task or per-key limit
        (``limit_key``) are left to ``services.claim_keyed``."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        return self._claim(connections[self.alias], queues, limit, Start(worker_id, now, lease))

    def _claim(
        self,
        connection: BaseDatabaseWrapper,
        queues: Sequence[str] | None,
        limit: int,
        start: Start,
    ) -> list[Job]:
        """``claim`` for a positive ``limit`` and None or some queues; ``start`` says what
        the jobs claimed are to hold."""
        raise NotImplementedError

    def listen(self, on_error: Callable[[BaseException], None] | None = None) -> Listener:
        """A listener for new-job notifications: here one that polls (the database cannot
        notify)."""
        return PollingListener()

    def maintenance_lock(self, *, now: datetime) -> contextlib.AbstractContextManager[bool]:
        """Hold the maintenance lock for the duration of the block, if it can be had."""
        raise NotImplementedError

    @classmethod
    def start_jobs(
        cls, connection: BaseDatabaseWrapper, ids: Sequence[JobId], start: Start
    ) -> list[Job]:
        """See ``start_jobs``; ``ids`` is not empty."""
        raise NotImplementedError

    @classmethod
    def complete_succeeded(
        cls, connection: BaseDatabaseWrapper, items: Sequence[Success], *, worker_id: str
    ) -> dict[JobId, bool]:
        """See ``complete_succeeded``; ``items`` is not empty."""
        raise NotImplementedError

    @classmethod
    def complete_succeeded_counting(
        cls, connection: BaseDatabaseWrapper, items: Sequence[Success], *, worker_id: str
    ) -> tuple[dict[JobId, bool], list[BatchCount]]:
        """See ``complete_succeeded_counting``: ``complete_succeeded``, then one
        ``count_batch_ends`` per batch, in the order of their ids."""
        recorded = cls.complete_succeeded(connection, items, worker_id=worker_id)
        ended: dict[Any, int] = {}
        for job, *_ in items:
            if job.batch_id is not None and job.pk in recorded:
                ended[job.batch_id] = ended.get(job.batch_id, 0) + 1
        counted = [
            cls.count_batch_ends(connection, batch_id, ended[batch_id], 0, 0)
            for batch_id in sorted(ended, key=str)
        ]
        return recorded, [count for count in counted if count is not None]

    @classmethod
    def insert_jobs(cls, connection: BaseDatabaseWrapper, jobs: Iterable[Job]) -> list[Job]:
        """See ``insert_jobs`` (the fast path): one ``INSERT`` whose text is built once per
        database alias (Django's compiler rebuilds it for every save, and prepares every
        value through the ORM, which cost more than the insert's round trip), run once per
        job (``executemany``), which mysqlclient sends to MariaDB/MySQL as multi-row
        statements of up to 64 KiB each."""
        given = list(jobs)
        if not given:
            return given
        insert = cls.insert_sql(connection)
        with connection.cursor() as cursor:
            if len(given) == 1:
                cursor.execute(insert, fastpath.row(given[0], connection))
            else:
                cursor.executemany(insert, fastpath.rows(given, connection))
        fastpath.mark_saved(given, connection.alias)
        return given

    @classmethod
    def insert_sql(cls, connection: BaseDatabaseWrapper) -> str:
        """The single-job ``INSERT`` of every column, built once per alias."""
        sql = _INSERT_SQL.get(connection.alias)
        if sql is None:
            columns = rows.job_columns(connection)
            sql = _INSERT_SQL[connection.alias] = query("common", "insert").format(
                table=connection.ops.quote_name(Job._meta.db_table),
                columns=", ".join(columns),
                marks=", ".join(["%s"] * len(columns)),
            )
        return sql

    @classmethod
    def estimated_row_count(cls, connection: BaseDatabaseWrapper, model: type[Model]) -> int | None:
        """See ``estimated_row_count``: None unless the database keeps such a statistic."""
        return None

    @classmethod
    def update_returns_rows(cls, connection: BaseDatabaseWrapper) -> bool:
        """Whether ``UPDATE … RETURNING`` is available (PostgreSQL, SQLite 3.35+)."""
        return False

    @classmethod
    def count_batch_ends(
        cls,
        connection: BaseDatabaseWrapper,
        batch_id: Any,
        succeeded: int,
        failed: int,
        cancelled: int,
    ) -> BatchCount | None:
        """See ``count_batch_ends``: one ``UPDATE … RETURNING`` where the database has it,
        else the ``UPDATE`` and a read of the row it locked. (No tallies to add: only
        PostgreSQL's flushes leave them.)"""
        table = connection.ops.quote_name(Batch._meta.db_table)
        returning = cls.update_returns_rows(connection)
        pk = rows.prep(Batch, "id", batch_id, connection)
        sql = query("common", "count_batch_ends").format(
            table=table, returning="RETURNING pending, sealed_at, finished_at" if returning else ""
        )
        params = [succeeded + failed + cancelled, succeeded, failed, cancelled, pk]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if not returning:
                if not cursor.rowcount:
                    return None
                cursor.execute(query("common", "batch_finishable").format(table=table), [pk])
            row = cursor.fetchone()
        return None if row is None else BatchCount(batch_id, True, *batch_state(row))

    @classmethod
    def announce_queue_change(cls, connection: BaseDatabaseWrapper, name: str) -> None:
        """See ``announce_queue_change``: nothing, unless the database can notify."""

    @classmethod
    def index_hint(cls, connection: BaseDatabaseWrapper, index: str) -> str:
        """What to write after a table's name to have the planner use ``index`` (nothing:
        the planner finds it)."""
        return ""


# What callers hold (``for_alias``): the strategy protocol is the base class itself, so that
# the operations' signatures and contracts are written once.
ClaimStrategy: TypeAlias = BaseStrategy

# The single-job INSERT statement, per database alias.
_INSERT_SQL = fastpath.alias_cache()

# Django's vendor names and their strategies (each vendor module registers its own).
_VENDORS: dict[str, type[BaseStrategy]] = {}
S = TypeVar("S", bound=type[BaseStrategy])


def register(cls: S) -> S:
    """Make ``cls`` the strategy of the databases of its ``vendor``."""
    _VENDORS[cls.vendor] = cls
    return cls


def strategy_class(connection: BaseDatabaseWrapper) -> type[BaseStrategy]:
    """The strategy class of ``connection``'s database; ``NotImplementedError`` for one
    asyncjobs does not support."""
    try:
        return _VENDORS[connection.vendor]
    except KeyError:
        raise NotImplementedError(
            f"asyncjobs supports PostgreSQL, MariaDB/MySQL and SQLite, not {connection.vendor}."
        ) from None


def for_alias(alias: str) -> ClaimStrategy:
    """The strategy for the database behind ``alias`` (a new one: each holds its own
    maintenance lock)."""
    return strategy_class(connections[alias])(alias)


def vendor_supported(alias: str) -> bool:
    """Whether asyncjobs can run on the database behind ``alias``."""
    return connections[alias].vendor in _VENDORS


def vendor_name(alias: str) -> str:
    """Django's name for the database behind ``alias`` (``connection.vendor``), for
    messages."""
    return str(connections[alias].vendor)


def default_poll_interval(strategy: ClaimStrategy) -> timedelta | None:
    """The poll interval ``strategy``'s database calls for where the project sets none
    (None: ``POLL_INTERVAL``'s default)."""
    return strategy.poll_interval


def deadlock_keeps_transaction(alias: str) -> bool:
    """Whether, on the database behind ``alias``, a transaction that a deadlock failed inside
    a savepoint can roll back to it and go on (PostgreSQL), or was rolled back whole
    (MariaDB/MySQL's InnoDB)."""
    return strategy_class(connections[alias]).deadlock_keeps_transaction


def insert_jobs(alias: str, jobs: Iterable[Job]) -> list[Job]:
    """Insert new, unsaved jobs in the caller's transaction (or in autocommit), as
    ``bulk_create`` would, and return them; Django's model signals are not sent
    (``task_enqueued`` is). ``jobs`` may be a generator.

    With the fast path off, ``bulk_create`` itself. On: one job is one ``INSERT`` whose text
    is built once per alias; more jobs are that ``INSERT`` once per job (SQLite,
    MariaDB/MySQL) or ``COPY … FROM STDIN`` (PostgreSQL), which streams the rows. On
    PostgreSQL the insert trigger fires either way, so workers are notified at commit.
    """
    connection = connections[alias]
    if not fastpath.enabled():
        return rows.orm_insert(alias, list(jobs))
    return strategy_class(connection).insert_jobs(connection, jobs)


def start_jobs(
    alias: str, ids: Iterable[JobId], *, worker_id: str, now: datetime, lease: timedelta
) -> list[Job]:
    """queued → running for the jobs with primary keys ``ids`` that are still queued, with
    their attempt rows: what a claim does to the jobs it picked, by the same statements, for
    a caller that picked them itself (``services.claim_keyed``, ``services.claim_job``).
    Returns those jobs, best first. Run it in the transaction that holds the locks the caller
    chose the jobs under."""
    given = list(dict.fromkeys(ids))
    if not given:
        return []
    connection = connections[alias]
    return strategy_class(connection).start_jobs(connection, given, Start(worker_id, now, lease))


def complete_succeeded(
    alias: str, items: Sequence[Success], *, worker_id: str
) -> dict[JobId, bool]:
    """running → succeeded for a batch, inside the caller's transaction: one statement on
    PostgreSQL, two on SQLite, three on MariaDB/MySQL.

    ``items`` are ``(job, JSON return value, HTTP status or None, started at or None,
    finished at)``; a start time replaces the claim time on the attempt (and on the job's
    ``last_attempted_at``; the job's ``started_at`` stays its first claim's). An attempt is
    closed only if it is still open and still ``worker_id``'s, and only those jobs move to
    ``succeeded``; a job's ``unique_key`` is freed unless it has ``unique_for``. Returns
    the primary keys of the jobs recorded, each with whether it has dependents
    (``Job.has_dependents``, read under the row's lock, so that a dependent enqueued at the
    same moment is either seen or sees the job succeeded).
    """
    if not items:
        return {}
    connection = connections[alias]
    return strategy_class(connection).complete_succeeded(connection, items, worker_id=worker_id)


def batch_state(row: Sequence[Any]) -> tuple[int, bool, bool]:
    """A batch's ``(pending, sealed_at, finished_at)`` as read: pending, sealed, finished."""
    return int(row[0]), row[1] is not None, row[2] is not None


def count_batch_ends(
    alias: str, batch_id: Any, *, succeeded: int = 0, failed: int = 0, cancelled: int = 0
) -> BatchCount | None:
    """Jobs of batch ``batch_id`` ended (in the caller's transaction; none: only the tallies
    are added): the batch row is locked (waiting for another transaction that holds it),
    the tallies others left are added to it and deleted, ``pending`` goes down by the jobs'
    number and each status's counter up. Returns what the row holds now (``held``), or
    None for a batch that does not exist. The row stays locked by this transaction, so no
    other can finish the batch meanwhile."""
    connection = connections[alias]
    return strategy_class(connection).count_batch_ends(
        connection, batch_id, succeeded, failed, cancelled
    )


def complete_succeeded_counting(
    alias: str, items: Sequence[Success], *, worker_id: str
) -> tuple[dict[JobId, bool], list[BatchCount]]:
    """``complete_succeeded`` for items some of whose jobs belong to batches: their batches'
    counts move in the same transaction, as ``count_batch_ends`` would, except on
    PostgreSQL for a flush of one batch: in the same statement, on the row if no other
    transaction holds it, else into a ``BatchTally`` (no wait for the other's commit).
    Returns what ``complete_succeeded`` returns, and each batch's ``BatchCount``."""
    if not items:
        return {}, []
    connection = connections[alias]
    return strategy_class(connection).complete_succeeded_counting(
        connection, items, worker_id=worker_id
    )


def estimated_row_count(model: type[Model], alias: str) -> int | None:
    """The planner's estimate of a table's row count (PostgreSQL, MariaDB/MySQL), or None
    where there is none. Cheap, unlike ``COUNT(*)`` over a million rows; refreshed by
    (auto)analyze, or by InnoDB's persistent statistics."""
    connection = connections[alias]
    return strategy_class(connection).estimated_row_count(connection, model)


def announce_queue_change(alias: str, name: str) -> None:
    """Tell listening workers, when the current transaction commits, that queue ``name`` was
    paused or resumed (PostgreSQL only; elsewhere workers re-read the pauses each poll
    interval)."""
    connection = connections[alias]
    strategy_class(connection).announce_queue_change(connection, name)


def ready_queues(alias: str, *, plain: bool = True, keyed: bool = True) -> set[str]:
    """The names of the queues that hold ready jobs: ``plain`` ones, and ``keyed`` ones
    (under a per-task or per-key limit).

    A loose index scan of each claim index, one index probe per queue, where ``SELECT
    DISTINCT`` would read every ready job (bench/HISTORY.md, "Queue depth")."""
    connection = connections[alias]
    qn = connection.ops.quote_name
    strategy = strategy_class(connection)
    walks = []
    if plain:
        walks.append(("plain", "asyncjobs_job_claim", "limit_key = ''"))
    if keyed:
        walks.append(("keyed", "asyncjobs_job_claim_keyed", "NOT (limit_key = '')"))
    if not walks:
        return set()
    # One CTE per walk and a UNION of them, generated for the walks asked for.
    ctes = [
        query("common", "ready_queue_walk").format(
            walk=walk,
            table=qn(Job._meta.db_table),
            index_hint=strategy.index_hint(connection, index),
            keys=keys,
        )
        for walk, index, keys in walks
    ]
    selects = [f"SELECT queue FROM {walk} WHERE queue IS NOT NULL" for walk, _, _ in walks]  # noqa: S608
    sql = f"WITH RECURSIVE {', '.join(ctes)} {' UNION '.join(selects)}"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {row[0] for row in cursor.fetchall()}


def marks(count: int) -> str:
    """``count`` parameter markers, comma-separated (for ``IN`` lists and ``VALUES`` rows,
    where a database binds no arrays)."""
    return ", ".join(["%s"] * count)
