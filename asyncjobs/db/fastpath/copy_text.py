"""``COPY`` text formatted by hand, from values prepared as the ORM would."""

import json
import operator
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field

from asyncjobs.db.fastpath.values import PlanEntry, plain_json_dumps
from asyncjobs.models import Job

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


def _copy_text(value: object) -> str:
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
    field: Field, plan: PlanEntry, connection: BaseDatabaseWrapper
) -> Callable[[object], str]:
    """How ``field``'s values become COPY text: ``_copy_text`` of the ORM's preparation
    (``plan`` is the field's ``row_plan`` entry), which for plain values is the value
    itself, and for a list or a dict in a JSON field is psycopg's ``Jsonb`` around it,
    written as its ``dumps`` text."""
    _, prepare, plain = plan
    dumps = plain_json_dumps(field, prepare, connection)

    def format_value(value: object) -> str:
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


def copy_lines(
    jobs: list[Job],
    per_job: list[tuple[str, Callable[[object], str]]],
    shared: list[Callable[[object], str]],
    shared_values: Callable[[dict[str, Any]], tuple[Any, ...]],
    memo: dict[tuple[int, ...], str],
) -> str:
    """Jobs as lines of COPY text: the ``per_job`` columns (attname and formatter) first,
    then the ``shared`` ones (formatters of what ``shared_values`` takes from a job's
    values), formatted once per distinct set of value objects, which a batch's jobs of one
    task share (``rows.copy_layout``).

    ``memo`` maps the identities of a job's shared values to their formatted text; it must
    not outlive the jobs (while they live, no other object can take those identities)."""
    lines = []
    last: tuple[Any, ...] = ()
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
