"""New jobs' values prepared as the ORM's ``INSERT`` prepares them, without its per-field
calls where it would pass a value unchanged; JSON columns decoded without
``JSONField.from_db_value``."""

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field

from asyncjobs.db.fastpath.switch import alias_cache
from asyncjobs.models import Job, StoredJSONField, loaded_json, storable_json_text

# A field's preparation of a value for the database (``Field.get_db_prep_save``).
Prepare: TypeAlias = Callable[[Any, BaseDatabaseWrapper], Any]
# Per concrete field of Job: its attname, its preparation, and the types of value that
# preparation hands to the database unchanged (``row_plan``).
PlanEntry: TypeAlias = tuple[str, Prepare, frozenset[type]]

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


def _is_flat(value: object) -> bool:
    """Whether ``value`` is a list or dict of JSON scalars only (so a shallow copy of it
    shares nothing mutable)."""
    if type(value) is list:
        return all(type(item) in JSON_SCALARS for item in value)
    if type(value) is dict:
        return all(type(item) in JSON_SCALARS for item in value.values())
    return False


# Per alias: per concrete field of Job, its attname, its ORM preparation, and the types of
# value that preparation hands to the database unchanged on that database.
_ROW_PLAN = alias_cache()


def _plain_types(field: Field, connection: BaseDatabaseWrapper) -> frozenset[type]:
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


def row_plan(connection: BaseDatabaseWrapper) -> list[PlanEntry]:
    """Per concrete field of Job: its attname, its ORM preparation, its plain types."""
    plan = _ROW_PLAN.get(connection.alias)
    if plan is None:
        plan = _ROW_PLAN[connection.alias] = [
            (f.attname, f.get_db_prep_save, _plain_types(f, connection))
            for f in Job._meta.concrete_fields
        ]
    return plan


_INSERT_PLAN = alias_cache()


def insert_plan(connection: BaseDatabaseWrapper) -> list[PlanEntry]:
    """``row_plan`` for one job's ``INSERT``. Where a JSON field's preparation wraps a list or
    a dict in psycopg's ``Jsonb`` (PostgreSQL), it passes the text instead
    (``_json_as_text``), and integers go as they are: the ORM wraps them in psycopg's
    ``Int2``/``Int4``/``Int8`` so that a statement's parameter types do not depend on the
    values, which the insert's columns decide anyway. Where the preparation makes text of a
    value (SQLite, MariaDB/MySQL), the text is made directly when the value is of the kind
    checked here to give the same: a list or dict's JSON (``_json_as_text``), a UUID's hex
    (``_uuid_as_hex``), a UTC datetime's naive text in a UTC connection (``_utc_as_text``);
    the ORM's preparation took several Python calls for each."""
    plan = _INSERT_PLAN.get(connection.alias)
    if plan is None:
        plan = []
        fields = Job._meta.concrete_fields
        for field, (attname, prepare, plain) in zip(fields, row_plan(connection), strict=True):
            dumps = plain_json_dumps(field, prepare, connection) or _text_json_dumps(
                field, prepare, connection
            )
            if dumps is not None:
                prepare = _json_as_text(prepare, dumps)
            elif _gives_hex(field, prepare, connection):
                prepare = _uuid_as_hex(prepare)
            elif _gives_utc_text(field, prepare, connection):
                prepare = _utc_as_text(prepare)
            target = getattr(field, "target_field", field)  # (a foreign key's target)
            if connection.vendor == "postgresql" and isinstance(target, models.IntegerField):
                plain = plain | {int}
            plan.append((attname, prepare, plain))
        _INSERT_PLAN[connection.alias] = plan
    return plan


def _text_json_dumps(
    field: Any, prepare: Prepare, connection: BaseDatabaseWrapper
) -> Callable[[object], str] | None:
    """For a plain JSON field whose preparation is the value's JSON text as ``json.dumps``
    writes it (SQLite, MariaDB/MySQL): what makes that text (wrapped as ``StoredJSONField``
    wraps it). None for other fields and databases."""
    if type(field) not in PLAIN_JSON_FIELDS or field.encoder is not None:
        return None
    samples: list[Any] = [[], {"a": [1, 2.5, "é\u0000", None, True]}, ["x\ud800"]]
    if not all(prepare(sample, connection) == _wrapped(field, sample) for sample in samples):
        return None
    dumps = json.JSONEncoder().encode
    if type(field) is models.JSONField:
        return dumps
    return lambda value: storable_json_text(dumps(value), value)


def _wrapped(field: Any, value: Any) -> str:
    """``value``'s JSON text as ``field`` stores it (for ``_text_json_dumps``'s check)."""
    text = json.dumps(value)
    return text if type(field) is models.JSONField else storable_json_text(text, value)


def _gives_hex(field: Field, prepare: Prepare, connection: BaseDatabaseWrapper) -> bool:
    """Whether ``field`` is a UUID field whose preparation is the UUID's hex."""
    sample = uuid.UUID(int=0x1234567890ABCDEF1234567890ABCDEF)
    return (
        isinstance(field, models.UUIDField)
        and not field.is_relation
        and prepare(sample, connection) == sample.hex
    )


def _uuid_as_hex(prepare: Prepare) -> Prepare:
    """A UUID field's preparation that gives a UUID's hex directly (others: ``prepare``)."""

    def prepare_uuid(value: object, connection: BaseDatabaseWrapper) -> object:
        if type(value) is uuid.UUID:
            return value.hex
        return prepare(value, connection)

    return prepare_uuid


def _gives_utc_text(field: Field, prepare: Prepare, connection: BaseDatabaseWrapper) -> bool:
    """Whether ``field`` is a datetime field whose preparation of a UTC datetime is its naive
    text (``str``), in winter and in summer: the connection's time zone is UTC (SQLite,
    MariaDB/MySQL, with ``USE_TZ``)."""
    if type(field) is not models.DateTimeField:
        return False
    samples = [
        datetime(2000, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2000, 7, 2, 3, 4, 5, tzinfo=UTC),
    ]
    return all(
        prepare(sample, connection) == str(sample.replace(tzinfo=None)) for sample in samples
    )


def _utc_as_text(prepare: Prepare) -> Prepare:
    """A datetime field's preparation that gives a UTC datetime's naive text directly
    (others, freezegun's too: ``prepare``)."""

    def prepare_datetime(value: object, connection: BaseDatabaseWrapper) -> object:
        if type(value) is datetime and value.tzinfo is UTC:
            return str(value.replace(tzinfo=None))
        return prepare(value, connection)

    return prepare_datetime


def plain_json_dumps(
    field: Any, prepare: Prepare, connection: BaseDatabaseWrapper
) -> Callable[[object], str] | None:
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


def _json_as_text(prepare: Prepare, dumps: Callable[[object], str]) -> Prepare:
    """A JSON field's preparation that passes a list or a dict as the text ``Jsonb`` would
    send: an untyped parameter, which the server reads as the column's ``jsonb``. psycopg's
    dumping of the wrapper cost more than the rest of a job's values together. Other values
    get ``prepare``."""

    def prepare_json(value: object, connection: BaseDatabaseWrapper) -> object:
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


# Per alias: per shared column (not in PER_JOB_FIELDS), the value the last ``row`` prepared
# for it and what it prepared it to: (value, prepared).
_LAST_PREPARED = alias_cache()


def row(job: Job, connection: BaseDatabaseWrapper) -> list[Any]:
    """A new job's column values, prepared exactly as the ORM's INSERT prepares them
    (``tests/test_db.py`` checks that against the ORM); plain values skip the ORM's
    per-field calls, which cost more than the insert itself on a single enqueue.

    A value that the jobs of a task share (``services.JobFactory``: its policy, options,
    enqueue time; the fields not in ``PER_JOB_FIELDS``) and that the last call prepared for
    its column is not prepared again: that call's result is taken, while the value is the
    very same object (kept with it, so its identity cannot pass to another). Like ``rows``,
    this relies on such values not being changed in place (nothing does)."""
    values = job.__dict__
    plan, last = _single_plan(connection)
    prepared = []
    for attname, prepare, plain, shared in plan:
        value = values[attname]
        if type(value) in plain:
            prepared.append(value)
        elif not shared:
            prepared.append(prepare(value, connection))
        else:
            hit = last.get(attname)
            if hit is not None and hit[0] is value:
                prepared.append(hit[1])
            else:
                done = prepare(value, connection)
                last[attname] = (value, done)
                prepared.append(done)
    return prepared


def _single_plan(
    connection: BaseDatabaseWrapper,
) -> tuple[list[tuple[str, Prepare, frozenset[type], bool]], dict[str, tuple[object, Any]]]:
    """``insert_plan`` with whether each field is shared (not in ``PER_JOB_FIELDS``), and
    the alias's last prepared values (``row``)."""
    cached = _LAST_PREPARED.get(connection.alias)
    if cached is None:
        plan = [
            (attname, prepare, plain, attname not in PER_JOB_FIELDS)
            for attname, prepare, plain in insert_plan(connection)
        ]
        cached = _LAST_PREPARED[connection.alias] = (plan, {})
    return cached


def rows(jobs: list[Job], connection: BaseDatabaseWrapper) -> list[list[Any]]:
    """``row`` for each job of a batch (SQLite, MariaDB/MySQL), with a value object that
    several jobs share prepared once: a batch's jobs of one task share their enqueue time,
    policies and options (see ``services.job_maker``), whose preparation (a datetime made
    naive, a policy dumped to JSON) cost more per job than its own arguments'. The memo is
    keyed by the objects' identities: ``jobs`` keeps them alive meanwhile."""
    plan, _ = _single_plan(connection)
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
