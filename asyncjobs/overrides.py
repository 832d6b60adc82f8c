"""What ``.using()`` changed on a task, kept with its jobs.

A job stores its task's path and the resolved policy it runs by, but
``get_result(id).task`` must equal the very task that was enqueued (django.tasks'
contract), ``run_after`` and asyncjobs' own options included. So each job keeps, as JSON,
the attributes in which its task differs from the module-level task of that path, and the
backend applies them to the imported task when it builds a result. Most jobs come from the
module-level task itself and keep nothing.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string

from asyncjobs import retry

# The attributes ``.using()`` sets: Django's, then asyncjobs' (JobTask).
USING_FIELDS = (
    "priority",
    "queue_name",
    "run_after",
    "backend",
    "max_attempts",
    "backoff",
    "retry_on",
    "fail_on",
    "timeout",
    "webhook_url",
    "unique_key",
    "unique_for",
    "concurrency_key",
    "depends_on",
    "on_dependency_failure",
)


class _NotStorable(Exception):
    pass


def _encode(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, timedelta):
        return {"timedelta": value.total_seconds()}
    if isinstance(value, tuple | list):
        return {"tuple": [_encode(item) for item in value]}
    if isinstance(value, retry.Exponential | retry.Fixed | retry.FromCallable):
        return {"backoff": value.to_json()}
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if (isinstance(value, type) or callable(value)) and module and "<" not in name:
        return {"import": f"{module}.{name}"}
    raise _NotStorable


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((kind, data),) = value.items()
    if kind == "datetime":
        return parse_datetime(data)
    if kind == "timedelta":
        return timedelta(seconds=data)
    if kind == "tuple":
        return tuple(_decode(item) for item in data)
    if kind == "backoff":
        return retry.from_json(data)
    try:
        return import_string(data)
    except ImportError:
        return data  # (moved or gone since: its path still says what it was)


def task_overrides(task: Any, base: Any) -> dict[str, Any] | None:
    """The ``USING_FIELDS`` in which ``task`` differs from ``base`` (the module-level task
    of its path), as JSON; None if none. An attribute that cannot be put in JSON (a backoff
    object of the project's own) is left out: the result's task shows the base's value."""
    changed: dict[str, Any] = {}
    for name in USING_FIELDS:
        value = getattr(task, name, None)
        if value != getattr(base, name, None):
            try:
                changed[name] = _encode(value)
            except _NotStorable:
                continue
    return changed or None


def apply_overrides(task: Any, overrides: dict[str, Any], clone: Callable[..., Any]) -> Any:
    """``task`` with ``overrides`` (from ``task_overrides``) applied through ``clone(task,
    changes)``, which copies a task without validating it again."""
    return clone(task, {name: _decode(value) for name, value in overrides.items()})
