"""Job rows in and out of the database, shared by every vendor: jobs from raw rows, values
prepared as the ORM would, the attempt rows of a claim, and the text of a ``COPY``.

The fast ways to do each (``asyncjobs.db.fastpath``) are taken when the switch is on; the
ORM's own otherwise.
"""

import operator
import uuid
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from asyncjobs.db import fastpath
from asyncjobs.db.queries import query
from asyncjobs.models import Attempt, Job

if TYPE_CHECKING:  # (base imports this module)
    from asyncjobs.db.base import Start, Success

# A query parameter, of a type Django's cursors take.
Param: TypeAlias = int | float | Decimal | str | bytes | date | uuid.UUID | None

# Per alias: the job table's quoted columns and, per column, the converters the ORM applies
# to a raw value of it, with the column expression they take: as the ORM has them, and with
# the fast path's JSON decoding.
_COLUMNS = fastpath.alias_cache()


def _columns(
    connection: BaseDatabaseWrapper,
) -> tuple[list[str], list[tuple[list[Any], Any]], list[tuple[list[Any], Any]]]:
    cached = _COLUMNS.get(connection.alias)
    if cached is None:
        qn = connection.ops.quote_name
        table = Job._meta.db_table
        columns, orm, fast = [], [], []
        for field in Job._meta.concrete_fields:
            col = field.get_col(table)
            convs = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
            columns.append(qn(field.column or field.name))
            orm.append((convs, col))
            fast.append((fastpath.fast_converters(field, convs), col))
        cached = _COLUMNS[connection.alias] = (columns, orm, fast)
    return cached


def job_columns(connection: BaseDatabaseWrapper) -> list[str]:
    """The job table's columns, quoted, in the model's field order (the order of a row that
    ``rows_to_jobs`` takes)."""
    return _columns(connection)[0]


def columns_sql(connection: BaseDatabaseWrapper, prefix: str = "") -> str:
    """``job_columns`` as an SQL list, each after ``prefix`` (a table alias and a dot)."""
    return ", ".join(prefix + column for column in job_columns(connection))


def rows_to_jobs(alias: str, connection: BaseDatabaseWrapper, rows: list[tuple]) -> list[Job]:
    """Model instances from raw rows of every column (a claim's ``RETURNING`` or locking
    read), converted as a SELECT would be, best first (``UPDATE … RETURNING`` gives no
    order)."""
    _, orm, fast = _columns(connection)
    if fastpath.enabled():
        through_init = not fastpath.direct_jobs()
        jobs = fastpath.rows_to_jobs(alias, connection, rows, fast, through_init=through_init)
    else:
        attnames = [f.attname for f in Job._meta.concrete_fields]
        jobs = []
        for raw in rows:
            values = list(raw)
            for i, (convs, col) in enumerate(orm):
                for conv in convs:
                    values[i] = conv(values[i], col, connection)
            jobs.append(Job.from_db(alias, attnames, values))
    jobs.sort(key=lambda j: (-j.priority, j.run_after, j.enqueued_at))
    return jobs


def prep(
    model: type[Model], field_name: str, value: object, connection: BaseDatabaseWrapper
) -> Any:
    """A Python value as a query parameter, exactly as the ORM adapts it for the field."""
    field = model._meta.get_field(field_name)
    assert isinstance(field, Field)
    return field.get_db_prep_save(value, connection)


def closing_values(connection: BaseDatabaseWrapper, item: "Success") -> list[Param]:
    """What closing a successful attempt writes, as query parameters: the job's id, the
    attempt's number, its HTTP status, start and end (``complete_succeeded`` on SQLite and
    MariaDB/MySQL, which bind no arrays)."""
    job, _, http_status, started, finished = item
    return [
        prep(Job, "id", job.pk, connection),
        job.attempts,
        http_status,
        prep(Attempt, "started_at", started, connection),
        prep(Attempt, "finished_at", finished, connection),
    ]


# Attempt rows per INSERT statement: 4 parameters each, well under SQLite's oldest limit of
# 999 parameters per statement.
ATTEMPTS_PER_INSERT = 200
# One attempt's VALUES row: the job, its number, the worker, the start; the rest as a new
# Attempt's defaults (no finish, no outcome, no error, no HTTP status).
_ATTEMPT_ROW = "(%s, %s, %s, %s, NULL, '', '', '', '', NULL)"


def insert_attempts(alias: str, jobs: list[Job], start: "Start") -> None:
    """The open attempt rows of jobs just moved to running by ``start`` (a ``base.Start``;
    SQLite, MariaDB/MySQL: on PostgreSQL the claim statement writes them), in the caller's
    transaction. With the fast path on, one multi-row ``INSERT`` of the values the ORM would
    write (``bulk_create`` builds a model instance and prepares every field of each row: a
    tenth of a MariaDB claim's CPU); with it off, ``bulk_create``."""
    worker_id, now = start.worker_id, start.now
    if not fastpath.enabled():
        Attempt.objects.using(alias).bulk_create(
            [
                Attempt(job_id=j.pk, number=j.attempts, worker_id=worker_id, started_at=now)
                for j in jobs
            ]
        )
        return
    connection = connections[alias]
    started_at = prep(Attempt, "started_at", now, connection)
    with connection.cursor() as cursor:
        for first in range(0, len(jobs), ATTEMPTS_PER_INSERT):
            chunk = jobs[first : first + ATTEMPTS_PER_INSERT]
            params: list[Any] = []
            for job in chunk:
                params += [prep(Job, "id", job.pk, connection), job.attempts, worker_id, started_at]
            cursor.execute(
                query("common", "insert_attempts").format(
                    attempt_table=connection.ops.quote_name(Attempt._meta.db_table),
                    rows=", ".join([_ATTEMPT_ROW] * len(chunk)),
                ),
                params,
            )


def orm_insert(alias: str, jobs: list[Job]) -> list[Job]:
    """``insert_jobs`` through the ORM (the fast path off)."""
    return Job.objects.using(alias).bulk_create(jobs)


# Per alias: the COPY statement's quoted columns, the formatters of the per-job columns
# (with their attnames) and of the shared ones, and a getter of a job's shared values.
_COPY_LAYOUT = fastpath.alias_cache()


def copy_layout(
    connection: BaseDatabaseWrapper,
) -> tuple[list[str], list[Any], list[Any], Callable[[dict], tuple]]:
    """How ``copy_lines`` writes a job: the per-job columns (``fastpath.PER_JOB_FIELDS``)
    first, then the rest, formatted once per distinct set of value objects, which a batch's
    jobs of one task share."""
    layout = _COPY_LAYOUT.get(connection.alias)
    if layout is None:
        columns = job_columns(connection)
        plan = fastpath.row_plan(connection)
        fields = list(zip(columns, Job._meta.concrete_fields, plan, strict=True))
        per_job = [entry for entry in fields if entry[1].attname in fastpath.PER_JOB_FIELDS]
        shared = [entry for entry in fields if entry[1].attname not in fastpath.PER_JOB_FIELDS]
        layout = _COPY_LAYOUT[connection.alias] = (
            [column for column, _, _ in per_job + shared],
            [(f.attname, fastpath.copy_formatter(f, p, connection)) for _, f, p in per_job],
            [fastpath.copy_formatter(f, p, connection) for _, f, p in shared],
            operator.itemgetter(*(f.attname for _, f, _ in shared)),
        )
    return layout


def copy_lines(
    jobs: list[Job], connection: BaseDatabaseWrapper, memo: dict[tuple[int, ...], str]
) -> str:
    """Jobs as lines of COPY text, in ``copy_layout``'s column order (``memo``: see
    ``fastpath.copy_lines``)."""
    _, per_job, shared, shared_values = copy_layout(connection)
    return fastpath.copy_lines(jobs, per_job, shared, shared_values, memo)
