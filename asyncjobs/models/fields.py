"""JSON fields that store any JSON value on every database."""

import json
import re
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

# Any JSON value round-trips, on every database: PostgreSQL's jsonb cannot hold the NUL
# character (\u0000) nor an unpaired surrogate (\ud800), which are valid in Python strings
# and in SQLite's JSON text. Such a value is stored as a one-key object whose value is the
# value's JSON text ({"$asyncjobs:json": "..."}: the escapes become plain characters of a
# string), and read back as the value. A value that is itself such a one-key object is
# wrapped the same way, so reading is never ambiguous. Wrapped values are opaque to JSON
# lookups in SQL; every other value is stored as it is.

WRAPPED_JSON_KEY = "$asyncjobs:json"
_ENCODER = json.JSONEncoder()
# An escape of an unpaired surrogate in JSON text (json escapes non-ASCII as \uXXXX).
_LONE_SURROGATE = re.compile(
    r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)


def storable_json_text(text: str, value: Any) -> str:
    """``text`` (the JSON text of ``value``) as every database stores it: wrapped if it
    holds NUL or an unpaired surrogate (or ``value`` looks like a wrapped value)."""
    if (
        "\\u0000" in text
        or ("\\ud" in text and _LONE_SURROGATE.search(text))
        or (type(value) is dict and len(value) == 1 and WRAPPED_JSON_KEY in value)
    ):
        return _ENCODER.encode({WRAPPED_JSON_KEY: text})
    return text


def loaded_json(value: Any) -> Any:
    """A JSON value as read from the database, unwrapped (see ``storable_json_text``)."""
    if type(value) is dict and len(value) == 1:
        inner = value.get(WRAPPED_JSON_KEY)
        if type(inner) is str:
            return json.loads(inner)
    return value


class StoredJSONField(models.JSONField):
    """A ``JSONField`` that stores any JSON value on every database (see above)."""

    def get_db_prep_value(
        self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False
    ) -> Any:
        kind = type(value)
        if (kind is list or kind is dict or kind is str) and value:
            text = _ENCODER.encode(value)
            if storable_json_text(text, value) is not text:
                value = {WRAPPED_JSON_KEY: text}
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        return loaded_json(super().from_db_value(value, expression, connection))

    def deconstruct(self) -> Any:
        # The public path, which migrations already name: moving the class within the
        # package must not look like a field change to makemigrations.
        name, _path, args, kwargs = super().deconstruct()
        return name, "asyncjobs.models.StoredJSONField", args, kwargs
