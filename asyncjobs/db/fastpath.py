"""Every reach of ``asyncjobs.db`` past Django's and psycopg's public API, behind one switch.

``ASYNCJOBS["FAST_PATH"]`` (default True) turns these on; with it off, the same operations go
through the ORM and Django's cursors (``enabled()``), and store the same rows
(``tests/test_fastpath.py``). What lives here:

- model instances filled in through ``__dict__`` instead of ``Model.from_db`` (unless a
  project listens to ``pre_init``/``post_init`` for Job), and JSON columns decoded without
  ``JSONField.from_db_value`` (``rows_to_jobs``);
- new jobs' values prepared without the ORM's per-field calls where the ORM would pass them
  unchanged (``row``, ``rows``), ``_state`` set by hand after an insert (``mark_saved``);
- ``COPY`` text formatted by hand (``copy_escaped``, ``copy_formatter``);
- a psycopg cursor on Django's connection, with server-side binding, kept per connection
  (``bound_cursor``), its statements entered in Django's query log (``query_logged``), and
  psycopg's own ``timestamptz`` loader (``load_timestamps_natively``);
- the per-alias caches of all that (``alias_cache``), dropped when ``DATABASES`` or
  ``ASYNCJOBS`` change (``override_settings`` in tests).
"""

import contextlib
import json
import uuid
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from django.core.signals import setting_changed
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.base import ModelState
from django.dispatch import receiver

from asyncjobs.conf import jobs_settings
from asyncjobs.models import Job, StoredJSONField, loaded_json, storable_json_text


def enabled() -> bool:
    """Whether the fast paths are on (``ASYNCJOBS["FAST_PATH"]``)."""
    return bool(jobs_settings.FAST_PATH)


# Every per-alias cache of asyncjobs.db, to be dropped together (see ``alias_cache``).
_ALIAS_CACHES: list[dict[Any, Any]] = []


def alias_cache() -> dict[Any, Any]:
    """A new dict for values computed once per database alias (statement texts, column
    plans), emptied whenever ``DATABASES`` or ``ASYNCJOBS`` change."""
    cached: dict[Any, Any] = {}
    _ALIAS_CACHES.append(cached)
    return cached


@receiver(setting_changed)
def _clear_alias_caches(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASES", "ASYNCJOBS", "USE_TZ", "TIME_ZONE"):
        for cached in _ALIAS_CACHES:
            cached.clear()


@cache
def psycopg3() -> bool:
    """Whether Django's PostgreSQL backend runs on psycopg 3 (it takes psycopg 3 when it is
    installed, else psycopg2). Server-side binding, kept cursors, binary arrays, psycopg's
    own ``COPY`` and ``notifies`` are psycopg 3's; on psycopg2 the same statements run
    through Django's cursors, ``copy_expert`` and ``poll()``."""
    try:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3
    except ImportError:  # neither driver: there is no PostgreSQL connection to ask about
        return False
    return bool(is_psycopg3)


# JSON fields without an encoder or decoder of their own: plain JSON text in the database
# (StoredJSONField's values wrapped when they must be; see asyncjobs.models).
PLAIN_JSON_FIELDS = (models.JSONField, StoredJSONField)
# The Python types of JSON's scalars, as json.loads makes them.
JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def json_from_db(value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
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


_JSON_ONLY = [json_from_db]


def fast_converters(field: Any, converters: list[Any]) -> list[Any]:
    """``converters`` (what the ORM applies to a raw value of ``field``) with a plain JSON
    field's own ``from_db_value`` replaced by ``json_from_db``."""
    return [json_from_db if _is_plain_json(field, conv) else conv for conv in converters]


def _is_plain_json(field: Any, conv: Any) -> bool:
    return (
        type(field) in PLAIN_JSON_FIELDS
        and field.decoder is None
        and getattr(conv, "__func__", None) is type(field).from_db_value
    )


def _is_flat(value: Any) -> bool:
    """Whether ``value`` is a list or dict of JSON scalars only (so a shallow copy of it
    shares nothing mutable)."""
    if type(value) is list:
        return all(type(item) in JSON_SCALARS for item in value)
    if type(value) is dict:
        return all(type(item) in JSON_SCALARS for item in value.values())
    return False


def rows_to_jobs(
    alias: str,
    connection: BaseDatabaseWrapper,
    rows: list[tuple],
    converters: list[tuple[list[Any], Any]],
    *,
    through_init: bool,
) -> list[Job]:
    """Jobs from raw rows of every column, converted with ``converters`` (per column: the
    converters from ``fast_converters`` and their column expression). Filled in through
    ``__dict__`` unless ``through_init``, then by ``Model.from_db``."""
    attnames = [f.attname for f in Job._meta.concrete_fields]
    convert = [(i, convs, col) for i, (convs, col) in enumerate(converters) if convs]
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
                decoded = json_from_db(value, col, connection)
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
    return jobs


def mark_saved(jobs: list[Job], alias: str) -> None:
    """What Django sets on an instance it has saved."""
    for job in jobs:
        job._state.adding = False
        job._state.db = alias


# Per alias: per concrete field of Job, its attname, its ORM preparation, and the types of
# value that preparation hands to the database unchanged on that database.
_ROW_PLAN = alias_cache()


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


def row_plan(connection: BaseDatabaseWrapper) -> list[tuple[str, Any, frozenset[type]]]:
    """Per concrete field of Job: its attname, its ORM preparation, its plain types."""
    plan = _ROW_PLAN.get(connection.alias)
    if plan is None:
        plan = _ROW_PLAN[connection.alias] = [
            (f.attname, f.get_db_prep_save, _plain_types(f, connection))
            for f in Job._meta.concrete_fields
        ]
    return plan


_INSERT_PLAN = alias_cache()


def insert_plan(connection: BaseDatabaseWrapper) -> list[tuple[str, Any, frozenset[type]]]:
    """``row_plan`` for one job's ``INSERT``. Where a JSON field's preparation wraps a list or
    a dict in psycopg's ``Jsonb`` (PostgreSQL), it passes the text instead
    (``_json_as_text``), and integers go as they are: the ORM wraps them in psycopg's
    ``Int2``/``Int4``/``Int8`` so that a statement's parameter types do not depend on the
    values, which the insert's columns decide anyway."""
    plan = _INSERT_PLAN.get(connection.alias)
    if plan is None:
        plan = []
        fields = Job._meta.concrete_fields
        for field, (attname, prepare, plain) in zip(fields, row_plan(connection), strict=True):
            dumps = plain_json_dumps(field, prepare, connection)
            if dumps is not None:
                prepare = _json_as_text(prepare, dumps)
            target = getattr(field, "target_field", field)  # (a foreign key's target)
            if connection.vendor == "postgresql" and isinstance(target, models.IntegerField):
                plain = plain | {int}
            plan.append((attname, prepare, plain))
        _INSERT_PLAN[connection.alias] = plan
    return plan


def plain_json_dumps(
    field: Any, prepare: Any, connection: BaseDatabaseWrapper
) -> Callable[[Any], str] | None:
    """For a ``JSONField`` whose preparation wraps a value in psycopg's ``Jsonb`` (on
    PostgreSQL): the function that wrapper makes the value's JSON text with. None for other
    fields and databases."""
    if type(field) not in PLAIN_JSON_FIELDS or field.encoder is not None:
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


# The job fields that differ from one job to the next in a batch of one task's calls (see
# ``services.job_maker``): the others are mostly objects a batch's jobs share.
PER_JOB_FIELDS = ("id", "args", "kwargs", "unique_key", "unique_for")


def row(job: Job, connection: BaseDatabaseWrapper) -> list[Any]:
    """A new job's column values, prepared exactly as the ORM's INSERT prepares them
    (``tests/test_db.py`` checks that against the ORM); plain values skip the ORM's
    per-field calls, which cost more than the insert itself on a single enqueue."""
    values = job.__dict__
    return [
        value if type(value := values[attname]) in plain else prepare(value, connection)
        for attname, prepare, plain in insert_plan(connection)
    ]


def rows(jobs: list[Job], connection: BaseDatabaseWrapper) -> list[list[Any]]:
    """``row`` for each job of a batch (SQLite, MariaDB/MySQL), with a value object that
    several jobs share prepared once: a batch's jobs of one task share their enqueue time,
    policies and options (see ``services.job_maker``), whose preparation (a datetime made
    naive, a policy dumped to JSON) cost more per job than its own arguments'. The memo is
    keyed by the objects' identities: ``jobs`` keeps them alive meanwhile."""
    plan = [
        (attname, prepare, plain, attname not in PER_JOB_FIELDS)
        for attname, prepare, plain in insert_plan(connection)
    ]
    memo: dict[tuple[str, int], Any] = {}
    prepared = []
    for job in jobs:
        values = job.__dict__
        one = []
        for attname, prepare, plain, shared in plan:
            value = values[attname]
            if type(value) in plain:
                one.append(value)
            elif not shared:
                one.append(prepare(value, connection))
            else:
                key = (attname, id(value))
                if key not in memo:
                    memo[key] = prepare(value, connection)
                one.append(memo[key])
        prepared.append(one)
    return prepared


# COPY's text format: these characters in a value are written as escapes (the backslash
# first, so that the escapes' own backslashes are not doubled).
_COPY_ESCAPES = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def copy_escaped(text: str) -> str:
    """``text`` with COPY's escapes. (``str.translate`` looks up every character in a
    mapping; a search for each of the four is several times quicker on text that holds
    none of them, as most values do.)"""
    for char, escape in _COPY_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text


def _copy_text(value: Any) -> str:
    """A value prepared by the ORM in COPY's text format."""
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
    return copy_escaped(text)


def copy_formatter(
    field: Any, plan: tuple[str, Any, frozenset[type]], connection: BaseDatabaseWrapper
) -> Callable[[Any], str]:
    """How ``field``'s values become COPY text: ``_copy_text`` of the ORM's preparation
    (``plan`` is the field's ``row_plan`` entry), which for plain values is the value
    itself, and for a list or a dict in a JSON field is psycopg's ``Jsonb`` around it,
    written as its ``dumps`` text."""
    _, prepare, plain = plan
    dumps = plain_json_dumps(field, prepare, connection)

    def format_value(value: Any) -> str:
        if value is None:
            return "\\N"
        kind = type(value)
        if dumps is not None and (kind is list or kind is dict):
            if not value:  # (as arguments often are: not worth the encoder's call)
                return "[]" if kind is list else "{}"
            return copy_escaped(str(dumps(value)))
        if kind in plain:
            return _copy_text(value)
        return _copy_text(prepare(value, connection))

    return format_value


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


# Per Django connection (each belongs to one thread): the psycopg cursor that
# ``bound_cursor(keep=True)`` hands out, kept between calls.
KEPT_CURSORS: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def bound_cursor(connection: BaseDatabaseWrapper, *, keep: bool = False) -> Iterator[Any]:
    """A psycopg cursor with server-side binding on Django's PostgreSQL connection, in its
    current transaction, with errors raised as Django's; Django's own cursor where that is
    not to be had (psycopg2, which binds on the client, or the fast path off).

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
    if not bound(connection):
        with connection.cursor() as wrapper:
            yield wrapper
        return
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    cursor = KEPT_CURSORS.pop(connection, None) if keep else None
    if cursor is None or cursor.connection is not raw:
        cursor = psycopg.Cursor(raw)
    try:
        with connection.wrap_database_errors:
            yield cursor
    finally:
        if keep:
            KEPT_CURSORS[connection] = cursor
        else:
            cursor.close()


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
