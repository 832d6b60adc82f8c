"""Task arguments and return values as stored: JSON checks and size limits.

The hot path of every enqueue and every result: a flat value (what task arguments mostly
are) is checked without being encoded.
"""

import json
import math
from typing import Any, TypeAlias

from asyncjobs import db
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import InvalidArgumentsError, ResultTooLargeError
from asyncjobs.tasks_api import normalize_json

# A JSON value: what ``storable_json`` returns and what a JSONField reads back.
JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"

# json.dumps(allow_nan=False) builds an encoder per call; this one is built once.
_STRICT_JSON = json.JSONEncoder(allow_nan=False)


# A flat value's integers beyond this take the general path, so that each of its scalars but
# the strings has a short JSON text: at most 24 characters (-2.2250738585072014e-308).
_FLAT_INT_MAX = 2**64
_FLAT_INT_MIN = -(2**64)


def _flat_copy(value: Any) -> tuple[JSON, int] | None:
    """A copy of ``value`` if it is what task arguments mostly are, a flat list (or tuple)
    of scalars or a flat dict of them with text keys, and those scalars can be stored: no
    NaN or infinity, no integer beyond 2**64 (20 digits). ``None`` for anything else, which
    takes the general path (which also raises the errors).

    With the copy, an upper bound of the length of its JSON text, from the length of its
    strings: a character takes at most 12 bytes of JSON (outside the Basic Multilingual
    Plane, a surrogate pair of \\u escapes), any other scalar at most 24; with quotes, a
    key's ": " and the ", " between items, an item takes at most 8 more.

    (``value`` is any object: its checks are by exact type, quicker than ``isinstance``,
    which mypy does not follow, hence ``Any``.)
    """
    kind = type(value)
    chars = 0  # of the strings, keys included: the only scalars of unbounded length
    if kind is list or kind is tuple:
        items = value
    elif kind is dict:
        for key in value:
            if type(key) is not str:
                return None
            chars += len(key)
        items = value.values()
    else:
        return None
    for item in items:
        item_kind = type(item)
        if item_kind is str:
            chars += len(item)
        elif item_kind is int:
            if item > _FLAT_INT_MAX or item < _FLAT_INT_MIN:  # (two tests: the quickest)
                return None
        elif item_kind is float:
            if not math.isfinite(item):
                return None
        elif item_kind not in db.JSON_SCALARS:
            return None
    copy = dict(value) if kind is dict else list(value)
    return copy, 2 + 32 * len(copy) + 12 * chars


def storable_json_sized(value: object) -> tuple[JSON, int]:
    """``storable_json(value)`` and an upper bound of the length of its JSON text
    (``_STORED_JSON``), worked out from what checking it costs already: a flat value's
    strings are counted (``_flat_copy``), any other value is encoded anyway (then the bound
    is exact). ``json_size`` gives the exact size when the bound is over a limit."""
    flat = _flat_copy(value)
    if flat is not None:  # checked without encoding it
        return flat
    normalized = normalize_json(value)
    text = _STRICT_JSON.encode(normalized)  # (raises for NaN and infinities)
    return normalized, len(text)


def storable_json(value: object) -> JSON:
    """``value`` normalised to JSON types that every supported database stores as given.

    Raises ``TypeError`` or ``ValueError`` for what is not JSON, and for NaN and infinities
    (not JSON; PostgreSQL's jsonb refuses them), on every database alike. Strings may hold
    any character, NUL and unpaired surrogates included (see ``StoredJSONField``).
    """
    return storable_json_sized(value)[0]


def checked_json(value: object, what: str) -> tuple[JSON, int]:
    """``value`` normalised to JSON types, with a bound of its JSON's length
    (``storable_json_sized``); ``InvalidArgumentsError`` if it cannot be."""
    try:
        return storable_json_sized(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentsError(f"{what} must be JSON-serializable: {exc}") from exc


# --- Size limits ----------------------------------------------------------------------------

# The JSON text of a value as a JSONField stores it (json.dumps's defaults: ", " and ": "
# separators, non-ASCII characters escaped, so one character is one byte). _STRICT_JSON
# writes the same text for what it accepts.
_STORED_JSON = json.JSONEncoder()


def json_size(value: JSON) -> int:
    """The size in bytes of ``value``'s JSON text as a JSONField stores it."""
    return len(_STORED_JSON.encode(value))


def check_result_size(value: JSON, bound: int, task_path: str) -> None:
    """Raise ``ResultTooLargeError`` if the JSON of a task's return value (as returned by
    ``storable_json_sized`` with ``bound``) is larger than ``MAX_RESULT_BYTES``."""
    limit = jobs_settings.MAX_RESULT_BYTES
    if limit is None or bound <= limit:
        return
    size = json_size(value)
    if size > limit:
        raise ResultTooLargeError(
            f"Task {task_path} returned {size:,} bytes of JSON; MAX_RESULT_BYTES is {limit:,}.",
            size,
            limit,
        )


def json_excerpt(value: JSON, limit: int | None, *, indent: int | None = None) -> str | None:
    """None if ``value``'s JSON (as stored) is at most ``limit`` bytes, else the first
    ``limit`` characters of its JSON text (ASCII) indented by ``indent`` as ``json.dumps``
    would: a large value as the admin and the API show it.

    Small flat values are not encoded at all, and a large value is encoded only as far as
    the excerpt goes. Any JSON value read back from the database is accepted.
    """
    if limit is None:
        return None
    flat = _flat_copy(value)
    if (flat is not None and flat[1] <= limit) or json_size(value) <= limit:
        return None
    pieces, length = [], 0
    for piece in json.JSONEncoder(indent=indent).iterencode(value):
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            break
    return "".join(pieces)[:limit]
