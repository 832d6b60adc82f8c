"""Everything that depends on the database vendor, behind one small interface.

``for_alias(alias)`` returns a ``ClaimStrategy`` for a database alias:

- ``claim()`` moves up to ``limit`` ready jobs to ``running`` for one worker and records the
  start of their attempts, in one short transaction, and returns them best first.
- ``listen()`` returns a ``Listener`` whose ``wait()`` blocks until jobs may have become ready
  or a queue was paused or resumed (PostgreSQL ``LISTEN``), or the timeout passes (SQLite,
  MariaDB/MySQL, or any fallback); it returns what was announced (``notification_kind``).
- ``maintenance_lock(now=...)`` is a context manager that yields whether this process won the
  cluster-wide lock for maintenance work.

``insert_jobs()`` stores a batch of new jobs (``COPY`` on PostgreSQL for large batches, a
multi-row ``INSERT`` on MariaDB/MySQL), and ``complete_succeeded()`` records a batch of
successful attempts in one statement (two on SQLite, three on MariaDB/MySQL).

Nothing outside this module looks at ``connection.vendor`` or writes SQL.

On PostgreSQL the hot statements use psycopg 3's own API (server-side binding, a kept cursor,
binary arrays, its ``COPY`` and ``notifies``). With psycopg2 as Django's driver
(``psycopg3()`` is false) the same statements run on Django's cursors, through
``copy_expert`` and through ``poll()``: nothing else differs.
"""

import contextlib
import itertools
import json
import logging
import operator
import os
import select
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Protocol

from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

from asyncjobs.conf import jobs_settings
from asyncjobs.models import (
    Attempt,
    Job,
    JobStatus,
    Lease,
    StoredJSONField,
    loaded_json,
    storable_json_text,
)

try:  # POSIX: the SQLite maintenance lock is a flock on a file beside the database
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

# The LISTEN/NOTIFY channel the triggers below announce ready jobs on, and
# ``announce_queue_change`` a paused or resumed queue. A payload is "<kind>:<queue name>":
# a job became ready; a job under a per-task or per-key limit became ready (see
# ``services.claim_keyed``); a queue was paused or resumed.
NOTIFY_CHANNEL = "asyncjobs"
NOTIFY_READY = "ready"
NOTIFY_KEYED = "keyed"
NOTIFY_QUEUE = "queue"
# The lease row of the workers' maintenance.
MAINTENANCE_LEASE = "maintenance"


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


class ClaimStrategy(Protocol):
    """The vendor-specific operations of the queue (see the module docstring)."""

    alias: str

    @property
    def announces(self) -> bool:
        """Whether listeners are told at once of ready jobs and paused or resumed queues
        (otherwise a worker must look for them)."""

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
        ``worker_id``; best first. Jobs under a per-task or per-key limit (``limit_key``)
        are left to ``services.claim_keyed``."""

    def listen(self, on_error: Callable[[BaseException], None] | None = None) -> Listener:
        """A listener for new-job notifications."""

    def maintenance_lock(self, *, now: datetime) -> contextlib.AbstractContextManager[bool]:
        """Hold the maintenance lock for the duration of the block, if it can be had."""


# Per alias: the job table's quoted columns and, per column, the converters the ORM would
# apply to a raw value of it (with the column expression they take).
_COLUMNS_CACHE: dict[str, tuple[list[str], list[tuple[list[Any], Any]]]] = {}


def _job_columns(connection: BaseDatabaseWrapper) -> tuple[list[str], list[tuple[list[Any], Any]]]:
    """The job table's columns, quoted, and their converters (see ``_rows_to_jobs``)."""
    cached = _COLUMNS_CACHE.get(connection.alias)
    if cached is None:
        qn = connection.ops.quote_name
        table = Job._meta.db_table
        columns, converters = [], []
        for field in Job._meta.concrete_fields:
            col = field.get_col(table)
            convs = [
                _json_from_db if _is_plain_json(field, conv) else conv
                for conv in connection.ops.get_db_converters(col)
                + field.get_db_converters(connection)
            ]
            columns.append(qn(field.column or field.name))
            converters.append((convs, col))
        cached = _COLUMNS_CACHE[connection.alias] = (columns, converters)
    return cached


def _is_plain_json(field: Any, conv: Any) -> bool:
    """Whether ``conv`` is a plain ``JSONField``'s own ``from_db_value`` (no decoder)."""
    return (
        type(field) in _PLAIN_JSON_FIELDS
        and field.decoder is None
        and getattr(conv, "__func__", None) is type(field).from_db_value
    )


# JSON fields without an encoder or decoder of their own: plain JSON text in the database
# (StoredJSONField's values wrapped when they must be; see asyncjobs.models).
_PLAIN_JSON_FIELDS = (models.JSONField, StoredJSONField)


def _json_from_db(value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
    """``JSONField.from_db_value`` for a column without a decoder, with the empty list and
    dict that most jobs' arguments and policies hold made without the decoder."""
    if value is None:
        return None
    if value == "[]":
        return []
    if value == "{}":
        return {}
    try:
        return loaded_json(json.loads(value))
    except json.JSONDecodeError:
        return value


_JSON_ONLY = [_json_from_db]
# The Python types of JSON's scalars, as json.loads makes them.
JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_flat(value: Any) -> bool:
    """Whether ``value`` is a list or dict of JSON scalars only (so a shallow copy of it
    shares nothing mutable)."""
    if type(value) is list:
        return all(type(item) in JSON_SCALARS for item in value)
    if type(value) is dict:
        return all(type(item) in JSON_SCALARS for item in value.values())
    return False


def _rows_to_jobs(alias: str, connection: BaseDatabaseWrapper, rows: list[tuple]) -> list[Job]:
    """Model instances from raw ``RETURNING`` rows, converted as a SELECT would be.

    As with new jobs (``services.job_maker``), an instance's fields are filled in directly
    unless a project listens to ``pre_init``/``post_init`` for Job, in which case
    ``Model.from_db`` builds it."""
    _, converters = _job_columns(connection)
    attnames = [f.attname for f in Job._meta.concrete_fields]
    convert = [(i, convs, col) for i, (convs, col) in enumerate(converters) if convs]
    through_init = pre_init.has_listeners(Job) or post_init.has_listeners(Job)
    # JSON text seen before in this batch (jobs of one task share their retry policy): a
    # flat list or dict of scalars is decoded once and copied per job.
    flat_json: dict[str, Any] = {}
    jobs = []
    for row in rows:
        values = list(row)
        for i, convs, col in convert:
            value = values[i]
            if convs == _JSON_ONLY and value is not None:
                known = flat_json.get(value)
                if known is not None:
                    values[i] = known.copy()
                    continue
                decoded = _json_from_db(value, col, connection)
                if _is_flat(decoded):
                    flat_json[value] = decoded.copy()
                values[i] = decoded
                continue
            for conv in convs:
                value = conv(value, col, connection)
            values[i] = value
        if through_init:
            jobs.append(Job.from_db(alias, attnames, values))
            continue
        state = ModelState()
        state.adding, state.db = False, alias
        job = Job.__new__(Job)
        job.__dict__ = {"_state": state, **dict(zip(attnames, values, strict=True))}
        jobs.append(job)
    # UPDATE ... RETURNING gives no order; hand jobs out best first.
    jobs.sort(key=lambda j: (-j.priority, j.run_after, j.enqueued_at))
    return jobs


def _prep(field_name: str, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """Adapt a Python value to a query parameter exactly as the ORM would for this field."""
    field = Job._meta.get_field(field_name)
    assert isinstance(field, Field)
    return field.get_db_prep_value(value, connection)


# From this many jobs on, PostgreSQL gets them through COPY. Two rows by COPY took less time
# than two by one multi-row INSERT (bulk_create) or by a pipelined executemany; see
# bench/README.md.
COPY_MIN_ROWS = 2
# The single-job INSERT statement, per database alias.
_INSERT_CACHE: dict[str, str] = {}


# Per alias: per concrete field of Job, its attname, its ORM preparation, and the types of
# value that preparation hands to the database unchanged on that database.
_ROW_PLAN: dict[str, list[tuple[str, Any, frozenset[type]]]] = {}


def _plain_types(field: Any, connection: BaseDatabaseWrapper) -> frozenset[type]:
    """The exact types whose values the ORM passes to ``connection`` as they are for
    ``field``: None where it stays None, and, where the preparation leaves a sample of the
    field's own kind alone, text, integers (SQLite), aware datetimes and UUIDs (PostgreSQL)."""
    types: set[type] = set()
    if field.get_db_prep_save(None, connection) is None:
        types.add(type(None))
    samples = (
        ((models.CharField, models.TextField), "x"),
        ((models.IntegerField,), 7),
        ((models.DateTimeField,), datetime(2000, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
        ((models.UUIDField,), uuid.UUID(int=7)),
    )
    for classes, sample in samples:
        if isinstance(field, classes) and not field.is_relation:
            prepared = field.get_db_prep_save(sample, connection)
            if type(prepared) is type(sample) and prepared == sample:
                types.add(type(sample))
    return frozenset(types)


def _row_plan(connection: BaseDatabaseWrapper) -> list[tuple[str, Any, frozenset[type]]]:
    """Per concrete field of Job: its attname, its ORM preparation, its plain types."""
    plan = _ROW_PLAN.get(connection.alias)
    if plan is None:
        plan = _ROW_PLAN[connection.alias] = [
            (f.attname, f.get_db_prep_save, _plain_types(f, connection))
            for f in Job._meta.concrete_fields
        ]
    return plan


def _row(job: Job, connection: BaseDatabaseWrapper) -> list[Any]:
    """A new job's column values, prepared exactly as the ORM's INSERT prepares them
    (``tests/test_db.py`` checks that against the ORM); plain values skip the ORM's
    per-field calls, which cost more than the insert itself on a single enqueue. On
    PostgreSQL, JSON lists and dicts go as text and integers unwrapped (``_insert_plan``)."""
    values = job.__dict__
    return [
        value if type(value := values[attname]) in plain else prepare(value, connection)
        for attname, prepare, plain in _insert_plan(connection)
    ]


def _rows(jobs: list[Job], connection: BaseDatabaseWrapper) -> list[list[Any]]:
    """``_row`` for each job of a batch (SQLite, MariaDB/MySQL), with a value object that
    several jobs share prepared once: a batch's jobs of one task share their enqueue time,
    policies and options (see ``services.job_maker``), whose preparation (a datetime made
    naive, a policy dumped to JSON) cost more per job than its own arguments'. Bulk enqueue
    of 5,000 jobs went from 15,300 to 21,700 jobs/s on SQLite and from 7,200 to 8,000 on
    MariaDB. The memo is keyed by the objects' identities: ``jobs`` keeps them alive
    meanwhile."""
    plan = [
        (attname, prepare, plain, attname not in _PER_JOB_FIELDS)
        for attname, prepare, plain in _insert_plan(connection)
    ]
    memo: dict[tuple[str, int], Any] = {}
    rows = []
    for job in jobs:
        values = job.__dict__
        row = []
        for attname, prepare, plain, shared in plan:
            value = values[attname]
            if type(value) in plain:
                row.append(value)
            elif not shared:
                row.append(prepare(value, connection))
            else:
                key = (attname, id(value))
                if key not in memo:
                    memo[key] = prepare(value, connection)
                row.append(memo[key])
        rows.append(row)
    return rows


_INSERT_PLAN: dict[str, list[tuple[str, Any, frozenset[type]]]] = {}


def _insert_plan(connection: BaseDatabaseWrapper) -> list[tuple[str, Any, frozenset[type]]]:
    """``_row_plan`` for one job's ``INSERT``. On PostgreSQL, the plain JSON fields pass a
    list or dict as its text (``_json_as_text``), and integers go as they are: the ORM wraps
    them in psycopg's ``Int2``/``Int4``/``Int8`` so that a statement's parameter types do
    not depend on the values, which the insert's columns decide anyway."""
    plan = _INSERT_PLAN.get(connection.alias)
    if plan is None:
        plan = []
        fields = Job._meta.concrete_fields
        for field, (attname, prepare, plain) in zip(fields, _row_plan(connection), strict=True):
            dumps = _plain_json_dumps(field, prepare, connection)
            if dumps is not None:
                prepare = _json_as_text(prepare, dumps)
            target = getattr(field, "target_field", field)  # (a foreign key's target)
            if connection.vendor == "postgresql" and isinstance(target, models.IntegerField):
                plain = plain | {int}
            plan.append((attname, prepare, plain))
        _INSERT_PLAN[connection.alias] = plan
    return plan


def _plain_json_dumps(
    field: Any, prepare: Any, connection: BaseDatabaseWrapper
) -> Callable[[Any], str] | None:
    """For a ``JSONField`` whose preparation wraps a value in psycopg's ``Jsonb`` (on
    PostgreSQL): the function that wrapper makes the value's JSON text with. None for other
    fields and databases."""
    if type(field) not in _PLAIN_JSON_FIELDS or field.encoder is not None:
        return None
    sample = prepare([], connection)
    if hasattr(sample, "obj") and hasattr(sample, "dumps"):  # psycopg 3's Jsonb
        dumps = sample.dumps or json.dumps
    elif hasattr(sample, "adapted") and hasattr(sample, "_dumps"):  # psycopg2's Json
        dumps = sample._dumps or json.dumps
    else:
        return None
    if dumps is json.dumps:  # the same text, without its per-call argument checks
        dumps = json.JSONEncoder().encode
    if type(field) is models.JSONField:
        return dumps
    return lambda value: storable_json_text(dumps(value), value)


def _json_as_text(prepare: Any, dumps: Callable[[Any], str]) -> Any:
    """A JSON field's preparation that passes a list or a dict as the text ``Jsonb`` would
    send: an untyped parameter, which the server reads as the column's ``jsonb``. psycopg's
    dumping of the wrapper cost more than the rest of a job's values together. Other values
    get ``prepare``."""

    def prepare_json(value: Any, connection: BaseDatabaseWrapper) -> Any:
        kind = type(value)
        if kind is list or kind is dict:
            if not value:  # (as arguments often are: not worth the encoder's call)
                return "[]" if kind is list else "{}"
            return str(dumps(value))
        return prepare(value, connection)

    return prepare_json


def _mark_saved(jobs: list[Job], alias: str) -> None:
    for job in jobs:
        job._state.adding = False
        job._state.db = alias


# Rows formatted per write to COPY.
COPY_CHUNK = 1000
# COPY's text format: these characters in a value are written as escapes (the backslash
# first, so that the escapes' own backslashes are not doubled).
_COPY_ESCAPES = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def _copy_escaped(text: str) -> str:
    """``text`` with COPY's escapes. (``str.translate`` looks up every character in a
    mapping; a search for each of the four is several times quicker on text that holds
    none of them, as most values do.)"""
    for char, escape in _COPY_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text


def _copy_text(value: Any) -> str:
    """A value prepared by the ORM (``_row``) in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):  # (psycopg's Int2/Int4 wrappers are ints)
        return str(int(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, timedelta):
        text = f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    elif isinstance(value, str):
        text = value
    elif hasattr(value, "obj") and hasattr(value, "dumps"):  # psycopg's Jsonb wrapper
        text = (value.dumps or json.dumps)(value.obj)
    elif hasattr(value, "adapted") and hasattr(value, "dumps"):  # psycopg2's Json wrapper
        text = value.dumps(value.adapted)
    else:
        raise TypeError(f"No COPY text format for {type(value).__name__}.")
    return _copy_escaped(text)


def _copy_formatter(
    field: Any, plan: tuple[str, Any, frozenset[type]], connection: BaseDatabaseWrapper
) -> Callable[[Any], str]:
    """How ``field``'s values become COPY text: ``_copy_text`` of the ORM's preparation
    (``plan`` is the field's ``_row_plan`` entry), which for plain values is the value
    itself, and for a list or a dict in a JSON field is psycopg's ``Jsonb`` around it,
    written as its ``dumps`` text."""
    _, prepare, plain = plan
    dumps = _plain_json_dumps(field, prepare, connection)

    def format_value(value: Any) -> str:
        if value is None:
            return "\\N"
        kind = type(value)
        if dumps is not None and (kind is list or kind is dict):
            if not value:  # (as arguments often are: not worth the encoder's call)
                return "[]" if kind is list else "{}"
            return _copy_escaped(str(dumps(value)))
        if kind in plain:
            return _copy_text(value)
        return _copy_text(prepare(value, connection))

    return format_value


# The job fields that differ from one job to the next in a batch of one task's calls (see
# ``services.job_maker``). COPY takes them first; the rest of a row is formatted once per
# distinct set of value objects, which a batch's jobs of one task share.
_PER_JOB_FIELDS = ("id", "args", "kwargs", "unique_key", "unique_for")
# Per alias: the COPY statement's quoted columns, the formatters of the per-job columns
# (with their attnames) and of the shared ones, and a getter of a job's shared values.
_COPY_LAYOUT: dict[str, tuple[list[str], list[Any], list[Any], Callable[[dict], tuple]]] = {}


def _copy_layout(
    connection: BaseDatabaseWrapper,
) -> tuple[list[str], list[Any], list[Any], Callable[[dict], tuple]]:
    layout = _COPY_LAYOUT.get(connection.alias)
    if layout is None:
        columns, _ = _job_columns(connection)
        fields = list(zip(columns, Job._meta.concrete_fields, _row_plan(connection), strict=True))
        per_job = [entry for entry in fields if entry[1].attname in _PER_JOB_FIELDS]
        shared = [entry for entry in fields if entry[1].attname not in _PER_JOB_FIELDS]
        layout = _COPY_LAYOUT[connection.alias] = (
            [column for column, _, _ in per_job + shared],
            [(f.attname, _copy_formatter(f, plan, connection)) for _, f, plan in per_job],
            [_copy_formatter(f, plan, connection) for _, f, plan in shared],
            operator.itemgetter(*(f.attname for _, f, _ in shared)),
        )
    return layout


def _copy_lines(
    jobs: list[Job], connection: BaseDatabaseWrapper, memo: dict[tuple[int, ...], str]
) -> str:
    """Jobs as lines of COPY text, in ``_copy_layout``'s column order.

    ``memo`` maps the identities of a job's shared values to their formatted text; it must
    not outlive the jobs (while they live, no other object can take those identities)."""
    _, per_job, shared, shared_values = _copy_layout(connection)
    lines = []
    last: tuple = ()
    tail = ""
    for job in jobs:
        values = job.__dict__
        common = shared_values(values)
        # Consecutive jobs mostly share the very same objects: comparing with the last
        # job's is quicker than making the memo's key.
        if not (last and all(map(operator.is_, common, last))):
            key = tuple(map(id, common))
            known = memo.get(key)
            if known is None:
                known = memo[key] = "\t".join(
                    format_value(value) for value, format_value in zip(common, shared, strict=True)
                )
            last, tail = common, known
        cells = [format_value(values[attname]) for attname, format_value in per_job]
        cells.append(tail)
        lines.append("\t".join(cells))
    lines.append("")
    return "\n".join(lines)


def insert_jobs(alias: str, jobs: Iterable[Job]) -> list[Job]:
    """Insert new, unsaved jobs in the caller's transaction (or in autocommit), as
    ``bulk_create`` would, and return them; Django's model signals are not sent
    (``task_enqueued`` is).

    One job: one ``INSERT`` whose text is built once per database alias (Django's compiler
    rebuilds it for every save, and prepares every value through the ORM, which cost more
    than the insert's round trip). More jobs: on PostgreSQL ``COPY … FROM STDIN``, which
    streams the rows; on SQLite that ``INSERT`` once per job, compiled once
    (``executemany``), which mysqlclient sends to MariaDB/MySQL as multi-row statements of
    up to 64 KiB each. On PostgreSQL the insert trigger fires for both, so workers are
    notified at commit either way. ``jobs`` may be a generator: ``COPY`` takes
    ``COPY_CHUNK`` jobs from it at a time, so that the next jobs are built while PostgreSQL
    stores the last ones.

    On PostgreSQL the statements run on psycopg's cursor: Django's query log (``DEBUG``, a
    test's query count) gets an entry for each, its ``execute_wrapper`` hooks do not see them.
    """
    connection = connections[alias]
    columns, _ = _job_columns(connection)
    table = connection.ops.quote_name(Job._meta.db_table)
    postgres = connection.vendor == "postgresql"
    rest = iter(jobs)
    given = list(itertools.islice(rest, COPY_MIN_ROWS)) if postgres else list(rest)
    if not given:
        return given
    if postgres and len(given) >= COPY_MIN_ROWS and not psycopg3():
        given = _copy_jobs_psycopg2(connection, given, rest)
    elif postgres and len(given) >= COPY_MIN_ROWS:
        statement = f"COPY {table} ({', '.join(_copy_layout(connection)[0])}) FROM STDIN"
        memo: dict[tuple[int, ...], str] = {}  # (``given`` keeps the jobs alive meanwhile)
        with (
            _query_logged(connection, statement),
            _bound_cursor(connection) as cursor,
            cursor.copy(statement) as copy,
        ):
            chunk, given = given + list(itertools.islice(rest, COPY_CHUNK - len(given))), []
            while chunk:
                given.extend(chunk)
                copy.write(_copy_lines(chunk, connection, memo))
                chunk = list(itertools.islice(rest, COPY_CHUNK))
    else:
        insert = _INSERT_CACHE.get(alias)
        if insert is None:
            marks = ", ".join(["%s"] * len(columns))
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
            _INSERT_CACHE[alias] = insert
        if postgres and psycopg3():  # one job
            with _query_logged(connection, insert), _bound_cursor(connection, keep=True) as cursor:
                cursor.execute(insert, _row(given[0], connection))
        else:
            with connection.cursor() as cursor:
                if len(given) == 1:
                    cursor.execute(insert, _row(given[0], connection))
                else:
                    cursor.executemany(insert, _rows(given, connection))
    _mark_saved(given, alias)
    return given


@contextlib.contextmanager
def _query_logged(connection: BaseDatabaseWrapper, sql: str) -> Iterator[None]:
    """An entry in Django's query log, as its own cursors write one, for a statement run on
    psycopg's cursor, when the log is kept (``DEBUG``, or a test capturing queries)."""
    if not connection.queries_logged:
        yield
        return
    with connection.cursor() as wrapper:
        debug_sql = getattr(wrapper, "debug_sql", None)  # Django's CursorDebugWrapper
        with debug_sql(sql) if debug_sql is not None else contextlib.nullcontext():
            yield


# Per Django connection (each belongs to one thread): the psycopg cursor that
# ``_bound_cursor(keep=True)`` hands out, kept between calls.
_KEPT_CURSORS: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _bound_cursor(connection: BaseDatabaseWrapper, *, keep: bool = False) -> Iterator[Any]:
    """A psycopg cursor with server-side binding on Django's PostgreSQL connection, in its
    current transaction, with errors raised as Django's.

    For the hot statements: the statement text goes to the server as it is and the values
    travel apart, so nothing is quoted into the text on every call (Django's cursors bind on
    the client). The statement is prepared once the connection's ``prepare_threshold`` says
    so: Django turns that off unless ``OPTIONS`` sets it, for connection poolers. Django's
    ``execute_wrapper`` hooks and query log do not see these.

    ``keep``: the same cursor again on the next call, for as long as Django's connection
    holds the same psycopg connection (making and closing a cursor cost a single enqueue
    about a tenth of its time). Its user must leave its adapters alone. A use inside
    another gets a cursor of its own.
    """
    if not psycopg3():
        # psycopg2 binds on the client, and keeps nothing worth keeping in a cursor.
        with connection.cursor() as wrapper:
            yield wrapper
        return
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    cursor = _KEPT_CURSORS.pop(connection, None) if keep else None
    if cursor is None or cursor.connection is not raw:
        cursor = psycopg.Cursor(raw)
    try:
        with connection.wrap_database_errors:
            yield cursor
    finally:
        if keep:
            _KEPT_CURSORS[connection] = cursor
        else:
            cursor.close()


def _load_timestamps_natively(cursor: Any, connection: BaseDatabaseWrapper) -> None:
    """Have ``cursor`` load ``timestamptz`` with psycopg's own loader where that gives what
    Django's does. Django wraps psycopg's loader to set each value's tzinfo to the
    connection's; with ``USE_TZ`` and the session in UTC (Django's default), psycopg's
    already sets ``datetime.UTC``, and the wrapper is a Python call per value (a claimed job
    holds several). Nothing to do on psycopg2, which loads them as Django's cursors do."""
    if not psycopg3():
        return
    from psycopg import adapters, pq
    from psycopg.postgres import types

    if connection.timezone is UTC and cursor.connection.info.parameter_status("TimeZone") == "UTC":
        oid = types["timestamptz"].oid
        cursor.adapters.register_loader(oid, adapters.get_loader(oid, pq.Format.TEXT))


def _insert_attempts(alias: str, jobs: list[Job], worker_id: str, now: datetime) -> None:
    Attempt.objects.using(alias).bulk_create(
        [Attempt(job_id=j.pk, number=j.attempts, worker_id=worker_id, started_at=now) for j in jobs]
    )


def _field_prep(model: Any, field_name: str, value: Any, connection: BaseDatabaseWrapper) -> Any:
    field = model._meta.get_field(field_name)
    assert isinstance(field, Field)
    return field.get_db_prep_save(value, connection)


def complete_succeeded(
    alias: str,
    items: Sequence[tuple[Job, Any, int | None, datetime | None, datetime]],
    *,
    worker_id: str,
) -> set[Any]:
    """Record successful attempts inside the caller's transaction: one statement on
    PostgreSQL, two on SQLite, three on MariaDB/MySQL.

    ``items`` are ``(job, JSON return value, HTTP status or None, started at or None,
    finished at)``; a start time replaces the claim time on the attempt (and on the job's
    ``last_attempted_at``, and ``started_at`` on a first attempt). An attempt is closed only
    if it is still open and still ``worker_id``'s (as ``record_success`` checks one at a
    time), and only those jobs move to ``succeeded``. Returns the primary keys of the jobs
    recorded.
    """
    if not items:
        return set()
    connection = connections[alias]
    if connection.vendor == "postgresql":
        return _complete_succeeded_pg(connection, items, worker_id=worker_id)
    if connection.vendor == "mysql":
        return _complete_succeeded_mysql(connection, items, worker_id=worker_id)
    # SQLite: two statements over VALUES lists (it has no arrays to bind).
    qn = connection.ops.quote_name
    attempt_table, job_table = qn(Attempt._meta.db_table), qn(Job._meta.db_table)
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(items))
    params: list[Any] = []
    for job, _, http_status, started, finished in items:
        params += [
            _prep("id", job.pk, connection),
            job.attempts,
            http_status,
            _field_prep(Attempt, "started_at", started, connection),
            _field_prep(Attempt, "finished_at", finished, connection),
        ]
    # Values are parameters; only quoted table names from the models are interpolated.
    close_attempts = f"""
        WITH d(did, dnumber, dstatus, dstart, dend) AS (VALUES {rows})
        UPDATE {attempt_table} SET finished_at = d.dend,
            started_at = COALESCE(d.dstart, started_at), outcome = 'succeeded',
            http_status = d.dstatus
        FROM d
        WHERE job_id = d.did AND number = d.dnumber
            AND worker_id = %s AND finished_at IS NULL
        RETURNING job_id"""  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(close_attempts, [*params, worker_id])
        closed = {row[0] for row in cursor.fetchall()}
    ours = [item for item in items if _prep("id", item[0].pk, connection) in closed]
    if not ours:
        return set()
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(ours))
    params = []
    for job, value, _, started, finished in ours:
        params += [
            _prep("id", job.pk, connection),
            _field_prep(Job, "return_value", value, connection),
            _field_prep(Job, "last_attempted_at", started, connection),
            _field_prep(Job, "finished_at", finished, connection),
        ]
    # A unique job keeps its key for unique_for after success, else frees it.
    finish_jobs = f"""
        WITH d(did, dvalue, dstart, dend) AS (VALUES {rows})
        UPDATE {job_table} SET status = 'succeeded', return_value = d.dvalue,
            finished_at = d.dend, worker_id = '', lease_expires_at = NULL,
            last_attempted_at = COALESCE(d.dstart, last_attempted_at),
            unique_key = CASE WHEN unique_for IS NULL THEN NULL ELSE unique_key END
        FROM d
        WHERE id = d.did AND status = 'running' AND worker_id = %s"""  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(finish_jobs, [*params, worker_id])
    return {item[0].pk for item in ours}


def _complete_succeeded_pg(
    connection: BaseDatabaseWrapper,
    items: Sequence[tuple[Job, Any, int | None, datetime | None, datetime]],
    *,
    worker_id: str,
) -> set[Any]:
    """``complete_succeeded`` on PostgreSQL: one statement of fixed text (the batch travels
    as arrays), so it can be prepared, and one round trip. The arrays go in binary format
    (``%(name)b``): psycopg writes them in less than half the time of text arrays."""
    qn = connection.ops.quote_name
    attempt_table, job_table = qn(Attempt._meta.db_table), qn(Job._meta.db_table)
    # Only quoted table names from the models are interpolated; values are parameters.
    sql = f"""
        WITH d AS (
            SELECT * FROM unnest(%(ids)b::uuid[], %(numbers)b::integer[],
                %(statuses)b::integer[], %(starts)b::timestamptz[], %(ends)b::timestamptz[],
                %(values)b::text[]) AS d(did, dnumber, dstatus, dstart, dend, dvalue)
        ), closed AS (
            UPDATE {attempt_table} AS a SET finished_at = d.dend,
                started_at = COALESCE(d.dstart, a.started_at), outcome = 'succeeded',
                http_status = d.dstatus
            FROM d
            WHERE a.job_id = d.did AND a.number = d.dnumber AND a.worker_id = %(worker)s
                AND a.finished_at IS NULL
            RETURNING a.job_id
        ), finished AS (
            UPDATE {job_table} AS j SET status = 'succeeded', return_value = d.dvalue::jsonb,
                finished_at = d.dend, worker_id = '', lease_expires_at = NULL,
                last_attempted_at = COALESCE(d.dstart, j.last_attempted_at),
                unique_key = CASE WHEN j.unique_for IS NULL THEN NULL ELSE j.unique_key END
            FROM d JOIN closed ON closed.job_id = d.did
            WHERE j.id = d.did AND j.status = 'running' AND j.worker_id = %(worker)s
            RETURNING j.id
        )
        SELECT job_id FROM closed"""  # noqa: S608
    params = {
        "ids": [job.pk for job, *_ in items],
        "numbers": [job.attempts for job, *_ in items],
        "statuses": [status for _, _, status, _, _ in items],
        "starts": [started for *_, started, _ in items],
        "ends": [finished for *_, finished in items],
        # The JSON text the ORM would store (JSONField without an encoder); SQL NULL for None.
        "values": [
            None if value is None else storable_json_text(json.dumps(value), value)
            for _, value, *_ in items
        ],
        "worker": worker_id,
    }
    if not psycopg3():  # psycopg2 has no binary parameters: arrays as ARRAY[...] literals
        sql = sql.replace(")b::", ")s::")
    with _bound_cursor(connection) as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


class PollingListener:
    """A listener that only sleeps: the fallback where there is no LISTEN/NOTIFY."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, timeout: float) -> list[str]:
        """Sleep ``timeout`` seconds (or until ``close``)."""
        self._event.wait(timeout)
        return []

    def close(self) -> None:
        """Wake any sleeper for good."""
        self._event.set()


class SQLiteStrategy:
    """SQLite has no row locks: pick candidates, then move only rows that are still ready.

    Both steps run in one transaction; with ``transaction_mode="IMMEDIATE"`` it takes the
    write lock up front, so two workers never interleave between the SELECT and the UPDATE
    (and never hit SQLite's lock-upgrade deadlock). The conditional UPDATE keeps the claim
    correct even without it.
    """

    announces = False

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def claim(
        self,
        *,
        queues: Sequence[str] | None,
        limit: int,
        worker_id: str,
        now: datetime,
        lease: timedelta,
    ) -> list[Job]:
        """See ``ClaimStrategy.claim``."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        connection = connections[self.alias]
        qn = connection.ops.quote_name
        table = qn(Job._meta.db_table)
        columns, _ = _job_columns(connection)
        in_queues = ""
        if queues is not None and len(queues) == 1:
            in_queues = "AND queue_name = %s"  # lets SQLite walk the claim index in order
        elif queues is not None:
            in_queues = f"AND queue_name IN ({', '.join(['%s'] * len(queues))})"
        with transaction.atomic(using=self.alias), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {table} WHERE status = %s AND limit_key = '' {in_queues} "  # noqa: S608
                "ORDER BY priority DESC, run_after, enqueued_at LIMIT %s",
                [JobStatus.QUEUED, *(queues or ()), limit],
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            id_marks = ", ".join(["%s"] * len(ids))
            cursor.execute(
                f"UPDATE {table} SET status = %s, worker_id = %s, lease_expires_at = %s, "  # noqa: S608
                "attempts = attempts + 1, started_at = COALESCE(started_at, %s), "
                f"last_attempted_at = %s WHERE id IN ({id_marks}) AND status = %s "
                f"RETURNING {', '.join(columns)}",
                [
                    JobStatus.RUNNING,
                    worker_id,
                    _prep("lease_expires_at", now + lease, connection),
                    _prep("started_at", now, connection),
                    _prep("last_attempted_at", now, connection),
                    *ids,
                    JobStatus.QUEUED,
                ],
            )
            jobs = _rows_to_jobs(self.alias, connection, cursor.fetchall())
            _insert_attempts(self.alias, jobs, worker_id, now)
        return jobs

    def listen(self, on_error: Callable[[BaseException], None] | None = None) -> Listener:
        """SQLite cannot notify: poll."""
        return PollingListener()

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


# Per (alias, whether every queue is claimed from): the claim statement's text.
_CLAIM_SQL: dict[tuple[str, bool], str] = {}


def _claim_sql(connection: BaseDatabaseWrapper, *, every_queue: bool) -> str:
    """The text of ``PostgresStrategy.claim``'s statement, built once per database."""
    key = (connection.alias, every_queue)
    cached = _CLAIM_SQL.get(key)
    if cached is not None:
        return cached
    qn = connection.ops.quote_name
    table = qn(Job._meta.db_table)
    attempt_table = qn(Attempt._meta.db_table)
    columns, _ = _job_columns(connection)
    returning = ", ".join(columns)
    order = "priority DESC, run_after, enqueued_at"
    # The status is a literal, not a parameter, so that the planner always matches the
    # partial claim index (even with server-side binding and generic plans).
    # Only identifiers from the model's metadata are interpolated; values are parameters.
    if every_queue:
        picked = f"""
            SELECT id FROM {table} WHERE status = 'queued' AND limit_key = ''
            ORDER BY {order} LIMIT %(limit)s FOR UPDATE SKIP LOCKED"""  # noqa: S608
    else:
        # Per queue an ordered scan of the claim index, then the best of those. A plain
        # "queue_name = ANY(...)" makes PostgreSQL sort every ready job on each claim.
        picked = f"""
            SELECT j.id FROM unnest(%(queues)s::text[]) AS q(name)
            CROSS JOIN LATERAL (
                SELECT id, priority, run_after, enqueued_at FROM {table}
                WHERE status = 'queued' AND limit_key = '' AND queue_name = q.name
                ORDER BY {order} LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            ) AS j
            ORDER BY j.priority DESC, j.run_after, j.enqueued_at LIMIT %(limit)s"""  # noqa: S608
    # One statement, so it is atomic even in autocommit: lock the best ready rows that no
    # one else holds, move them to running, and insert their attempt rows.
    sql = f"""
        WITH picked AS ({picked}
        ), claimed AS (
            UPDATE {table} AS j SET status = 'running', worker_id = %(worker)s,
                lease_expires_at = %(lease)s, attempts = j.attempts + 1,
                started_at = COALESCE(j.started_at, %(now)s), last_attempted_at = %(now)s
            FROM picked WHERE j.id = picked.id
            RETURNING {", ".join("j." + c for c in columns)}
        ), recorded AS (
            INSERT INTO {attempt_table}
                (job_id, number, worker_id, started_at, outcome, error_class,
                 error_message, traceback)
            SELECT id, attempts, %(worker)s, %(now)s, '', '', '', '' FROM claimed
        )
        SELECT {returning} FROM claimed
    """  # noqa: S608
    _CLAIM_SQL[key] = sql
    return sql


class PostgresStrategy:
    """PostgreSQL: one statement claims with ``FOR UPDATE SKIP LOCKED`` and records attempts.

    Concurrent workers skip each other's locked rows instead of queueing behind them. New
    work is announced by triggers (see ``NOTIFY_FUNCTIONS_SQL``) with ``pg_notify``, which
    PostgreSQL delivers on commit, so a worker never wakes for a job it cannot see yet.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def claim(
        self,
        *,
        queues: Sequence[str] | None,
        limit: int,
        worker_id: str,
        now: datetime,
        lease: timedelta,
    ) -> list[Job]:
        """See ``ClaimStrategy.claim``."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        connection = connections[self.alias]
        sql = _claim_sql(connection, every_queue=queues is None)
        params: dict[str, Any] = {
            "queues": list(queues) if queues is not None else None,
            "limit": limit,
            "worker": worker_id,
            "lease": now + lease,
            "now": now,
        }
        with _bound_cursor(connection) as cursor:
            _load_timestamps_natively(cursor, connection)
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return _rows_to_jobs(self.alias, connection, rows)

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
        """Whether connections go through a transaction-pooling pooler (``POOL_MODE``;
        detected from ``DISABLE_SERVER_SIDE_CURSORS`` when not set)."""
        mode = jobs_settings.POOL_MODE
        if mode is None:
            return bool(connections[self.alias].settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"))
        return mode == "transaction"


class PostgresListener:
    """Waits for NOTIFY on the asyncjobs channel; reconnects on failure, falling back to
    plain sleeping meanwhile."""

    def __init__(
        self, alias: str, channel: str, on_error: Callable[[BaseException], None] | None
    ) -> None:
        self.alias = alias
        self.channel = channel
        self.on_error = on_error
        self._conn: Any = None
        self._closed = threading.Event()

    def _connect(self) -> Any:
        params = connections[self.alias].get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(key, None)
        if not psycopg3():
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


@cache
def psycopg3() -> bool:
    """Whether Django's PostgreSQL backend runs on psycopg 3 (it takes psycopg 3 when it is
    installed, else psycopg2). The fast paths (server-side binding, kept cursors, binary
    arrays, psycopg's own ``COPY`` and ``notifies``) are psycopg 3's; on psycopg2 the same
    statements run through Django's cursors, ``copy_expert`` and ``poll()``."""
    try:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3
    except ImportError:  # neither driver: there is no PostgreSQL connection to ask about
        return False
    return bool(is_psycopg3)


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


def _copy_jobs_psycopg2(
    connection: BaseDatabaseWrapper, given: list[Job], rest: Iterator[Job]
) -> list[Job]:
    """``insert_jobs``' ``COPY`` on psycopg2: the same statement and text, streamed through
    ``copy_expert`` ``COPY_CHUNK`` jobs at a time (the next jobs are built while PostgreSQL
    stores the last ones). Returns every job stored."""
    table = connection.ops.quote_name(Job._meta.db_table)
    statement = f"COPY {table} ({', '.join(_copy_layout(connection)[0])}) FROM STDIN"
    memo: dict[tuple[int, ...], str] = {}  # (``stored`` keeps the jobs alive meanwhile)
    stored: list[Job] = []

    def chunks() -> Iterator[str]:
        chunk = given + list(itertools.islice(rest, COPY_CHUNK - len(given)))
        while chunk:
            stored.extend(chunk)
            yield _copy_lines(chunk, connection, memo)
            chunk = list(itertools.islice(rest, COPY_CHUNK))

    source = _CopySource(chunks())
    try:
        with (
            _query_logged(connection, statement),
            connection.cursor() as wrapper,
            connection.wrap_database_errors,
        ):
            wrapper.cursor.copy_expert(statement, source)
    except Exception:
        if source.error is not None:  # a bad job, as psycopg 3's COPY would raise it
            raise source.error from None
        raise
    return stored


class Psycopg2Listening:
    """A psycopg2 connection that LISTENs on ``channel``, with what ``PostgresListener``
    uses of a psycopg 3 one: ``notifies(timeout=..., stop_after=...)`` and ``close()``.
    It waits with ``select`` on the connection's socket and reads with ``poll()``."""

    def __init__(self, params: dict[str, Any], channel: str) -> None:
        import psycopg2
        from psycopg2 import sql

        self._conn = psycopg2.connect(**params)
        self._conn.autocommit = True
        with self._conn.cursor() as cursor:
            cursor.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def notifies(self, *, timeout: float, stop_after: int | None = None) -> list[Any]:
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


def for_alias(alias: str) -> ClaimStrategy:
    """The strategy for the database behind ``alias``."""
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        return PostgresStrategy(alias)
    if vendor == "sqlite":
        return SQLiteStrategy(alias)
    if vendor == "mysql":
        return MySQLStrategy(alias)
    raise NotImplementedError(
        f"asyncjobs supports PostgreSQL, MariaDB/MySQL and SQLite, not {vendor}."
    )


def is_sqlite_without_immediate(alias: str) -> bool:
    """Whether ``alias`` is SQLite with a transaction mode other than IMMEDIATE."""
    connection = connections[alias]
    if connection.vendor != "sqlite":
        return False
    mode = (connection.settings_dict.get("OPTIONS") or {}).get("transaction_mode")
    return (mode or "").upper() != "IMMEDIATE"


def vendor_supported(alias: str) -> bool:
    """Whether asyncjobs can run on the database behind ``alias``."""
    return connections[alias].vendor in {"postgresql", "mysql", "sqlite"}


# The NOTIFY triggers, installed by migration 0001 on PostgreSQL only (their functions brought
# to this version by 0004). New rows that are ready announce their queue once per statement
# (bulk inserts send one notification per queue, and one more if some of the jobs are under a
# per-task or per-key limit); updates that make a job ready (retry, rescue, promotion)
# announce it per row, filtered by WHEN so that claims and completions pay nothing.
# PostgreSQL folds duplicate notifications within a transaction. Payloads: see NOTIFY_CHANNEL.
NOTIFY_FUNCTIONS_SQL = """
CREATE OR REPLACE FUNCTION asyncjobs_notify_inserted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{channel}', q.kind || ':' || q.queue_name)
    FROM (
        SELECT DISTINCT
            CASE WHEN limit_key = '' THEN '{ready}' ELSE '{keyed}' END AS kind, queue_name
        FROM new_rows WHERE status = 'queued'
    ) AS q;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION asyncjobs_notify_ready() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify(
        '{channel}',
        CASE WHEN NEW.limit_key = '' THEN '{ready}:' ELSE '{keyed}:' END || NEW.queue_name
    );
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""

NOTIFY_TRIGGERS_SQL = """
CREATE TRIGGER asyncjobs_job_inserted AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION asyncjobs_notify_inserted();

CREATE TRIGGER asyncjobs_job_ready AFTER UPDATE OF status ON {table}
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued')
    EXECUTE FUNCTION asyncjobs_notify_ready();
"""

DROP_NOTIFY_TRIGGER_SQL = """
DROP TRIGGER IF EXISTS asyncjobs_job_ready ON {table};
DROP TRIGGER IF EXISTS asyncjobs_job_inserted ON {table};
DROP FUNCTION IF EXISTS asyncjobs_notify_ready();
DROP FUNCTION IF EXISTS asyncjobs_notify_inserted();
"""


def install_notify_functions(schema_editor: Any) -> None:
    """Create or replace the NOTIFY triggers' functions (PostgreSQL only; a no-op
    elsewhere)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        NOTIFY_FUNCTIONS_SQL.format(channel=NOTIFY_CHANNEL, ready=NOTIFY_READY, keyed=NOTIFY_KEYED)
    )


def install_notify_triggers(schema_editor: Any) -> None:
    """Create the NOTIFY triggers (PostgreSQL only; a no-op elsewhere)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    install_notify_functions(schema_editor)
    table = schema_editor.quote_name(Job._meta.db_table)
    schema_editor.execute(NOTIFY_TRIGGERS_SQL.format(table=table))


def drop_notify_triggers(schema_editor: Any) -> None:
    """Remove the NOTIFY triggers (PostgreSQL only; a no-op elsewhere)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(Job._meta.db_table)
    schema_editor.execute(DROP_NOTIFY_TRIGGER_SQL.format(table=table))


def estimated_row_count(model: Any, alias: str) -> int | None:
    """The planner's estimate of a table's row count (PostgreSQL, MariaDB/MySQL), or None
    where there is none. Cheap, unlike ``COUNT(*)`` over a million rows; refreshed by
    (auto)analyze, or by InnoDB's persistent statistics."""
    connection = connections[alias]
    if connection.vendor == "mysql":
        return _mysql_row_estimate(model, connection)
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def announce_queue_change(alias: str, name: str) -> None:
    """Tell listening workers, when the current transaction commits, that queue ``name`` was
    paused or resumed (PostgreSQL only; elsewhere workers re-read the pauses each poll
    interval)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, f"{NOTIFY_QUEUE}:{name}"])


def ready_queues(alias: str, *, plain: bool = True, keyed: bool = True) -> set[str]:
    """The names of the queues that hold ready jobs: ``plain`` ones, and ``keyed`` ones
    (under a per-task or per-key limit).

    A loose index scan of each claim index: the smallest queue name, then the next one
    above it, and so on, one index probe per queue, where ``SELECT DISTINCT`` would read
    every ready job (33 ms with 100,000 of them, against under a millisecond)."""
    connection = connections[alias]
    qn = connection.ops.quote_name
    table = qn(Job._meta.db_table)
    walks = []
    if plain:
        walks.append(("plain", "asyncjobs_job_claim", "limit_key = ''"))
    if keyed:
        walks.append(("keyed", "asyncjobs_job_claim_keyed", "NOT (limit_key = '')"))
    if not walks:
        return set()
    # Only identifiers from the model's metadata are interpolated; there are no values.
    ctes, selects = [], []
    for name, index, keys in walks:
        # The claim index's own condition, so that the planner can use it; SQLite is told
        # to (without statistics it took another index and sorted every ready job).
        hint = f" INDEXED BY {qn(index)}" if connection.vendor == "sqlite" else ""
        first = f"SELECT queue_name FROM {table}{hint} WHERE status = 'queued' AND {keys}"  # noqa: S608
        ctes.append(
            f"""{name}(queue) AS (
                SELECT ({first} ORDER BY queue_name LIMIT 1)
                UNION ALL
                SELECT ({first} AND queue_name > {name}.queue ORDER BY queue_name LIMIT 1)
                FROM {name} WHERE {name}.queue IS NOT NULL
            )"""  # noqa: S608
        )
        selects.append(f"SELECT queue FROM {name} WHERE queue IS NOT NULL")  # noqa: S608
    sql = f"WITH RECURSIVE {', '.join(ctes)} {' UNION '.join(selects)}"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {row[0] for row in cursor.fetchall()}


# MariaDB / MySQL ---------------------------------------------------------------------------
#
# Neither has partial indexes: Django creates the model's partial indexes there without their
# conditions and skips the partial unique constraint on ``unique_key``. Migration 0008 adds
# what the queries below need instead (``install_mysql_indexes``):
#
# - ``asyncjobs_job_claim_m`` (status, limit_key, queue_name, priority DESC, run_after,
#   enqueued_at) and ``asyncjobs_job_claim_all_m`` (the same without the queue; descending
#   index parts need MariaDB 10.8+ or MySQL 8, older servers sort instead): a claim
#   reads the ready jobs of a queue (or of every queue) in claim order from the index and
#   stops after ``limit`` rows, so that InnoDB locks only the rows it hands out (a sort
#   would lock every ready job first) and finished jobs are never read.
# - ``asyncjobs_job_unique_key_m``: a plain unique index on ``unique_key``. The partial
#   constraint elsewhere ("unique where not NULL") is exactly that, since InnoDB's unique
#   indexes let any number of NULLs in, and a job's key is set to NULL when it stops
#   holding it (when it ends; with ``unique_for``, by the first enqueue of that key after
#   it ran out), never left for the index to ignore. A generated column (NULL for finished
#   jobs) would instead tie uniqueness to the status, which ``unique_for`` deliberately
#   does not: a succeeded job keeps its key for that long.
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


def install_mysql_indexes(schema_editor: Any) -> None:
    """Create the indexes MariaDB/MySQL need in place of partial ones (see
    ``MYSQL_INDEXES``; MariaDB/MySQL only, a no-op elsewhere)."""
    if schema_editor.connection.vendor != "mysql":
        return
    qn = schema_editor.quote_name
    table = qn(Job._meta.db_table)
    for name, columns, unique in MYSQL_INDEXES:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        schema_editor.execute(f"CREATE {kind} {qn(name)} ON {table} ({columns})")


def drop_mysql_indexes(schema_editor: Any) -> None:
    """Remove the indexes ``install_mysql_indexes`` made (MariaDB/MySQL only)."""
    if schema_editor.connection.vendor != "mysql":
        return
    qn = schema_editor.quote_name
    table = qn(Job._meta.db_table)
    for name, _, _ in MYSQL_INDEXES:
        schema_editor.execute(f"DROP INDEX {qn(name)} ON {table}")


# Per (alias, number of queues claimed from, 0 for every queue): the claim's locking read.
_MYSQL_CLAIM_SQL: dict[tuple[str, int], str] = {}


def _mysql_claim_sql(connection: BaseDatabaseWrapper, *, queues: int) -> str:
    """The text of ``MySQLStrategy.claim``'s locking read of ``queues`` queues (0: of every
    queue), built once per database and number of queues."""
    key = (connection.alias, queues)
    cached = _MYSQL_CLAIM_SQL.get(key)
    if cached is None:
        qn = connection.ops.quote_name
        columns, _ = _job_columns(connection)
        index = qn("asyncjobs_job_claim_m" if queues else "asyncjobs_job_claim_all_m")
        in_queue = "AND queue_name = %s " if queues else ""
        # The status is a literal, as on PostgreSQL. FORCE INDEX: an ordered index scan that
        # stops at LIMIT is what keeps the locks few (see MYSQL_INDEXES), whatever the
        # optimizer's statistics say. Only identifiers from the model's metadata are
        # interpolated; values are parameters.
        read = (
            f"SELECT {', '.join(columns)} FROM {qn(Job._meta.db_table)} FORCE INDEX ({index}) "  # noqa: S608
            f"WHERE status = 'queued' AND limit_key = '' {in_queue}"
            "ORDER BY priority DESC, run_after, enqueued_at LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        # Several queues: one such read per queue, each locking what it returns, in one
        # statement (one round trip).
        cached = _MYSQL_CLAIM_SQL[key] = (
            " UNION ALL ".join([f"({read})"] * queues) if queues > 1 else read
        )
    return cached


# How long an idle worker sleeps between looks at the queue on MariaDB/MySQL unless the
# project sets POLL_INTERVAL: polling is the only way it learns of new jobs there, and a look
# is one indexed read per queue (see MySQLStrategy.claim).
MYSQL_POLL_INTERVAL = timedelta(seconds=0.2)


def default_poll_interval(strategy: ClaimStrategy) -> timedelta | None:
    """The poll interval ``strategy``'s database calls for where the project sets none
    (None: ``POLL_INTERVAL``'s default)."""
    return MYSQL_POLL_INTERVAL if isinstance(strategy, MySQLStrategy) else None


class MySQLStrategy:
    """MariaDB (10.8 and later) and MySQL 8: ``SELECT … FOR UPDATE SKIP LOCKED``, then an
    ``UPDATE`` of the rows it locked, in one short transaction.

    Neither has ``UPDATE … RETURNING``: the locking read returns the jobs' rows, and the
    claim's changes are applied to them as the ``UPDATE`` writes them (nobody else can change
    a row this transaction holds). Several queues are claimed from with one ordered read per
    queue (``UNION ALL``, one statement), and the best ``limit`` of those rows are kept: one
    read over all of them would sort, and lock, every ready job of those queues. There is no
    LISTEN/NOTIFY: workers poll (every ``MYSQL_POLL_INTERVAL`` unless the project sets
    ``POLL_INTERVAL``).
    """

    announces = False

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def claim(
        self,
        *,
        queues: Sequence[str] | None,
        limit: int,
        worker_id: str,
        now: datetime,
        lease: timedelta,
    ) -> list[Job]:
        """See ``ClaimStrategy.claim``."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        connection = connections[self.alias]
        table = connection.ops.quote_name(Job._meta.db_table)
        names = [] if queues is None else list(dict.fromkeys(queues))
        params: list[Any] = [limit] if queues is None else [v for n in names for v in (n, limit)]
        sql = _mysql_claim_sql(connection, queues=len(names))
        with transaction.atomic(using=self.alias), connection.cursor() as cursor:
            cursor.execute(sql, params)
            # Best first; rows of other queues past ``limit`` stay unclaimed (their locks go
            # at commit, a moment later).
            jobs = _rows_to_jobs(self.alias, connection, cursor.fetchall())[:limit]
            if not jobs:
                return []
            lease_expires_at = now + lease
            cursor.execute(
                f"UPDATE {table} SET status = 'running', worker_id = %s, "  # noqa: S608
                "lease_expires_at = %s, attempts = attempts + 1, "
                "started_at = COALESCE(started_at, %s), last_attempted_at = %s "
                f"WHERE id IN ({', '.join(['%s'] * len(jobs))})",
                [
                    worker_id,
                    _prep("lease_expires_at", lease_expires_at, connection),
                    _prep("started_at", now, connection),
                    _prep("last_attempted_at", now, connection),
                    *(_prep("id", job.pk, connection) for job in jobs),
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
            _insert_attempts(self.alias, jobs, worker_id, now)
        return jobs

    def listen(self, on_error: Callable[[BaseException], None] | None = None) -> Listener:
        """MariaDB/MySQL cannot notify: poll."""
        return PollingListener()

    @contextlib.contextmanager
    def maintenance_lock(self, *, now: datetime) -> Iterator[bool]:
        """A named lock (``GET_LOCK``) on the session: one worker at a time does maintenance,
        and the server drops the lock if the connection dies. Not a transaction's lock, so
        that the work inside runs in short transactions of its own."""
        connection = connections[self.alias]
        name = mysql_lock_name(str(connection.settings_dict["NAME"]))
        with connection.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
            (won,) = cursor.fetchone()
        try:
            yield bool(won)
        finally:
            if won:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT RELEASE_LOCK(%s)", [name])


def mysql_lock_name(database: str) -> str:
    """The name of the maintenance lock of ``database`` on a MariaDB/MySQL server: the
    database's name, or a digest of it where the name would pass GET_LOCK's 64 characters."""
    name = MYSQL_LOCK_PREFIX + database
    if len(name) > 64:
        import hashlib

        name = MYSQL_LOCK_PREFIX + hashlib.sha256(database.encode()).hexdigest()[:40]
    return name


def _as_uuid(value: Any) -> uuid.UUID:
    """A job's primary key as read raw from MariaDB (its ``uuid`` type: the dashed text) or
    MySQL (``char(32)``: the hex digits), or as Python holds it."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _complete_succeeded_mysql(
    connection: BaseDatabaseWrapper,
    items: Sequence[tuple[Job, Any, int | None, datetime | None, datetime]],
    *,
    worker_id: str,
) -> set[Any]:
    """``complete_succeeded`` on MariaDB/MySQL: lock the attempts still open and held by
    ``worker_id``, then two multi-table ``UPDATE``s join them to the batch's values (a derived
    table of ``SELECT … UNION ALL``: neither server binds arrays, and UPDATE has no
    RETURNING)."""
    qn = connection.ops.quote_name
    attempt_table, job_table = qn(Attempt._meta.db_table), qn(Job._meta.db_table)
    numbers = {_as_uuid(job.pk): job.attempts for job, *_ in items}
    with connection.cursor() as cursor:
        # Values are parameters; only quoted table names from the models are interpolated.
        cursor.execute(
            f"SELECT job_id, number FROM {attempt_table} "  # noqa: S608
            f"WHERE job_id IN ({', '.join(['%s'] * len(numbers))}) AND worker_id = %s "
            "AND finished_at IS NULL FOR UPDATE",
            [*(_prep("id", pk, connection) for pk in numbers), worker_id],
        )
        closed = {
            pk
            for job_id, number in cursor.fetchall()
            if numbers.get(pk := _as_uuid(job_id)) == number
        }
    ours = [item for item in items if _as_uuid(item[0].pk) in closed]
    if not ours:
        return set()
    first = "SELECT %s AS did, %s AS dnumber, %s AS dstatus, %s AS dstart, %s AS dend, %s AS dvalue"
    values = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s, %s, %s"] * (len(ours) - 1))
    params: list[Any] = []
    for job, value, http_status, started, finished in ours:
        params += [
            _prep("id", job.pk, connection),
            job.attempts,
            http_status,
            _field_prep(Attempt, "started_at", started, connection),
            _field_prep(Attempt, "finished_at", finished, connection),
            _field_prep(Job, "return_value", value, connection),
        ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {attempt_table} AS a JOIN ({values}) AS d "  # noqa: S608
            "ON a.job_id = d.did AND a.number = d.dnumber "
            "SET a.finished_at = d.dend, a.started_at = COALESCE(d.dstart, a.started_at), "
            "a.outcome = 'succeeded', a.http_status = d.dstatus "
            "WHERE a.worker_id = %s AND a.finished_at IS NULL",
            [*params, worker_id],
        )
        # A unique job keeps its key for unique_for after success, else frees it.
        cursor.execute(
            f"UPDATE {job_table} AS j JOIN ({values}) AS d ON j.id = d.did "  # noqa: S608
            "SET j.status = 'succeeded', j.return_value = d.dvalue, j.finished_at = d.dend, "
            "j.worker_id = '', j.lease_expires_at = NULL, "
            "j.last_attempted_at = COALESCE(d.dstart, j.last_attempted_at), "
            "j.unique_key = CASE WHEN j.unique_for IS NULL THEN NULL ELSE j.unique_key END "
            "WHERE j.status = 'running' AND j.worker_id = %s",
            [*params, worker_id],
        )
    return {item[0].pk for item in ours}


def _mysql_row_estimate(model: Any, connection: BaseDatabaseWrapper) -> int | None:
    """InnoDB's estimate of a table's row count (``estimated_row_count`` on MariaDB/MySQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_rows FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def mysql_isolation_level(alias: str) -> str | None:
    """The isolation level Django's connections to ``alias`` use, in lowercase, if it is
    MariaDB/MySQL (None elsewhere): ``OPTIONS["isolation_level"]``, Django's default
    ``"read committed"`` without it, or the server's default (``"server default"``, InnoDB's
    being REPEATABLE READ) when it is set to None."""
    connection = connections[alias]
    if connection.vendor != "mysql":
        return None
    options = connection.settings_dict.get("OPTIONS") or {}
    level = options.get("isolation_level", "read committed")
    return str(level).lower() if level else "server default"
