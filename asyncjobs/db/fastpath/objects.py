"""Model instances, ids and results made without their classes' own init: jobs filled in
through ``__dict__``, a uuid4 set on the UUID directly, ``TaskResult`` with its fields set
directly, and Django's private ``Signal._live_receivers`` and ``Signal._dead_receivers``."""

import os
import uuid
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import Any, TypedDict

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.dispatch import Signal

from asyncjobs.db.fastpath.switch import enabled
from asyncjobs.db.fastpath.values import _JSON_ONLY, _is_flat, json_from_db
from asyncjobs.models import Job
from asyncjobs.tasks_api import Task, TaskError, TaskResult, TaskResultStatus


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


# What ``pre_init`` and ``post_init`` had connected when ``direct_jobs`` last asked them.
_INIT_SEEN: list[tuple["Seen", "Seen"]] = []


def direct_jobs() -> bool:
    """Whether jobs are filled in through ``__dict__`` (``new_job``, ``rows_to_jobs``): the
    switch on, and no receiver of ``pre_init``/``post_init`` for Job, which the model's init
    would send. Asked on every enqueue: the answer is remembered (for the switch on, and no
    receiver) while neither signal's receivers change (``same_receivers``)."""
    if _INIT_SEEN:
        before, after = _INIT_SEEN[-1]
        if same_receivers(pre_init, before) and same_receivers(post_init, after):
            return True
    seen = receivers_seen(pre_init), receivers_seen(post_init)
    direct = enabled() and not (pre_init.has_listeners(Job) or post_init.has_listeners(Job))
    if direct and seen[0] is not None and seen[1] is not None:
        _INIT_SEEN[:] = [(seen[0], seen[1])]
    return direct


def job_template(
    values: dict[str, object], direct: dict[str, object] | None = None
) -> dict[str, object]:
    """What ``new_job`` takes: ``values`` (every concrete field of Job by attname, in field
    order), after a place for the model's state where jobs are filled in directly, as the
    model's init sets them. ``direct``: that, made before (``direct_template(values)``), to
    be copied (quicker than making it again)."""
    if not direct_jobs():
        return dict(values)
    return direct.copy() if direct is not None else direct_template(values)


def direct_template(values: dict[str, object]) -> dict[str, object]:
    """``values`` after a place for the model's state: ``job_template`` where jobs are filled
    in directly."""
    return {"_state": None, **values}


def new_job(values: dict[str, object]) -> Job:
    """A new, unsaved Job of ``values`` (a ``job_template``'s copy, its fields set, which
    the job takes over): filled in through ``__dict__`` where the template made room for it,
    else by the model's own init, positionally (itself several times faster than by
    keyword)."""
    if "_state" not in values:
        return Job(*values.values())  # type: ignore[misc]
    values["_state"] = ModelState()
    job = Job.__new__(Job)
    job.__dict__ = values
    return job


# A version 4 UUID: 122 random bits, the version (4) and the RFC 4122 variant (10) set.
_UUID4_RANDOM = ((1 << 128) - 1) & ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_FIXED = (4 << 76) | (0x8000 << 48)


def uuid4_direct() -> uuid.UUID:
    """``uuid.uuid4()``, with the same random bits from ``os.urandom``, set on the UUID
    directly (as Python 3.14's own ``uuid4`` does, CPython gh-128150) rather than through
    ``UUID.__init__``, whose checks are most of a uuid4 call's cost before 3.14."""
    value = object.__new__(uuid.UUID)
    object.__setattr__(value, "int", int.from_bytes(os.urandom(16)) & _UUID4_RANDOM | _UUID4_FIXED)
    object.__setattr__(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def _direct_uuid_works() -> bool:
    try:
        made = uuid4_direct()
        same = uuid.UUID(str(made))
        return made == same and hash(made) == hash(same) and same.version == 4
    except (AttributeError, TypeError, ValueError):
        return False


_DIRECT_UUID_WORKS = _direct_uuid_works()


def uuid4_factory() -> Callable[[], uuid.UUID]:
    """What makes new jobs' ids: ``uuid4_direct`` with the switch on (if this Python's UUID
    is laid out as it expects), else ``uuid.uuid4``."""
    return uuid4_direct if enabled() and _DIRECT_UUID_WORKS else uuid.uuid4


class ResultFields(TypedDict):
    """The fields of a ``TaskResult`` that its init takes."""

    task: Task
    id: str
    status: TaskResultStatus
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    last_attempted_at: datetime | None
    args: list[Any]
    kwargs: dict[str, Any]
    backend: str
    errors: list[TaskError]
    worker_ids: list[str]


# Whether TaskResult has exactly these fields and its return value, which ``task_result``
# then sets directly.
_RESULT_FIELDS_KNOWN = {f.name for f in fields(TaskResult)} == {
    *ResultFields.__annotations__,
    "_return_value",
}


def task_result(
    job: Job, task: Task, backend: str, errors: list[TaskError], worker_ids: list[str]
) -> TaskResult:
    """The ``TaskResult`` of ``job`` run as ``task`` by ``backend``, with its attempts'
    ``errors`` and ``worker_ids``. TaskResult's init would normalise the arguments again,
    which a job holds as JSON types already, and set its frozen fields one by one: with the
    switch on, and if TaskResult has the fields this knows (``ResultFields``), they are set
    directly instead (``tests/test_backend.py`` compares both ways; a dict of them and a
    loop cost half as much again, on a path run for every job of a bulk enqueue). The return
    value is set as Django's own backends set it."""
    if enabled() and _RESULT_FIELDS_KNOWN:
        result = object.__new__(TaskResult)
        put = object.__setattr__  # (TaskResult is frozen)
        put(result, "task", task)
        put(result, "id", str(job.pk))
        put(result, "status", job.task_result_status)
        put(result, "enqueued_at", job.enqueued_at)
        put(result, "started_at", job.started_at)
        put(result, "finished_at", job.finished_at)
        put(result, "last_attempted_at", job.last_attempted_at)
        put(result, "args", job.args)
        put(result, "kwargs", job.kwargs)
        put(result, "backend", backend)
        put(result, "errors", errors)
        put(result, "worker_ids", worker_ids)
    else:
        result = TaskResult(
            **ResultFields(
                task=task,
                id=str(job.pk),
                status=job.task_result_status,
                enqueued_at=job.enqueued_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                last_attempted_at=job.last_attempted_at,
                args=job.args,
                kwargs=job.kwargs,
                backend=backend,
                errors=errors,
                worker_ids=worker_ids,
            )
        )
    object.__setattr__(result, "_return_value", job.return_value)
    return result


# Receivers: sync ones, async ones.
Receivers = tuple[list[Callable[..., object]], list[Callable[..., object]]]

# A signal's receivers as ``receivers_seen`` saw them: Django's list of them (the signal's
# ``receivers``), its length then, and its last entry then.
Seen = tuple[list[Any], int, object]


def receivers_seen(signal: Signal) -> Seen | None:
    """What ``same_receivers`` later compares ``signal``'s receivers with; take it before
    looking at the receivers. None with the switch off, or where Django's ``Signal`` looks
    different: then nothing is to be remembered."""
    receivers = getattr(signal, "receivers", None)
    if not enabled() or type(receivers) is not list or not hasattr(signal, "_dead_receivers"):
        return None
    return receivers, len(receivers), receivers[-1] if receivers else None


def same_receivers(signal: Signal, seen: Seen) -> bool:
    """Whether ``signal`` has the very receivers it had when ``seen`` was taken
    (``receivers_seen``), the switch still on: what was worked out from them then holds.

    Django's ``Signal.connect`` appends an entry (a new tuple) to the list ``receivers``,
    ``disconnect`` deletes one from it, and a receiver whose weak reference died sets
    ``_dead_receivers`` until the list is rebuilt (a new list). So while the list is the
    same object, as long, with the same last entry, and no receiver died, it holds the
    same receivers: an entry appended since would be the last one unless it was deleted
    again, and an entry deleted before the last would have made the list shorter."""
    receivers = signal.receivers
    return (
        receivers is seen[0]
        and len(receivers) == seen[1]
        and (receivers[-1] if receivers else None) is seen[2]
        and not signal._dead_receivers  # type: ignore[attr-defined]
        and enabled()
    )


def live_receivers(signal: Signal, sender: type) -> Receivers | None:
    """The receivers ``signal`` sent by ``sender`` would reach (Django's private
    ``Signal._live_receivers``): sync ones and async ones. None with the switch off, or
    where Django's internals look different: then the caller must send."""
    if not enabled():
        return None
    try:
        sync, asynchronous = signal._live_receivers(sender)
    except Exception:
        return None
    return sync, asynchronous
