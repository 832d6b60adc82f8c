"""``ASYNCJOBS["FAST_PATH"]``: asyncjobs.db's fast paths and the ORM's ways store the same rows
and give the same results, on every database.

The same scenario (enqueue one job and a batch, claim, start jobs under a limit, record
successes and failures, read the results back) runs with the switch on and off, from an
empty table each time at a frozen time; the stored jobs and attempts, and what each step
returned, must be equal, field by field and type by type. (The whole suite runs with the
switch off too: ``make test-no-fast-path``; see CONTRIBUTING.md.)
"""

import gc
import uuid
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from freezegun import freeze_time

from asyncjobs import db, enqueue_many, services
from asyncjobs.db import fastpath, rows
from asyncjobs.models import Attempt, Job
from asyncjobs.tasks_api import TaskResult, default_task_backend
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def fast_path(on: bool) -> Any:
    return override_settings(ASYNCJOBS={**settings.ASYNCJOBS, "FAST_PATH": on})


def value_type(value: Any) -> type:
    """The type of ``value``, freezegun's datetime counting as a datetime: under
    ``freeze_time`` Django's own converters build its ``FakeDatetime`` on some versions
    (Django 6.0) where psycopg's loader builds a plain one; both are datetimes to callers."""
    return datetime if isinstance(value, datetime) else type(value)


def fields(job: Job, names: dict[Any, int]) -> dict[str, Any]:
    """A job's values and their types, its primary key as its place in the scenario."""
    values = {}
    for f in Job._meta.concrete_fields:
        value = getattr(job, f.attname)
        values[f.attname] = (value_type(value), names[value] if f.attname == "id" else value)
    return values


def result_fields(result: TaskResult, names: dict[Any, int]) -> dict[str, Any]:
    """A TaskResult's fields and their types (its id as its job's place in the scenario), and
    what its dataclass equality says against the same built by TaskResult's own init."""
    values = {
        f.name: (value_type(value := getattr(result, f.name)), value)
        for f in dataclass_fields(result)
        if f.name != "id"
    }
    values["id"] = names[uuid.UUID(result.id)]
    return values


def scenario(on: bool) -> dict[str, Any]:
    """Run every operation of asyncjobs.db on an empty job table; what it stored and
    returned, with primary keys replaced by the jobs' order of enqueue."""
    Attempt.objects.all().delete()
    Job.objects.all().delete()
    with fast_path(on), freeze_time(T0):
        assert fastpath.enabled() is on
        results: dict[str, Any] = {}
        single = tasks.add.using(priority=50).enqueue(1, "single")  # one INSERT
        batch = enqueue_many(  # COPY on PostgreSQL, the INSERT for each job elsewhere
            # (a fixed backoff: the retried job's next run is known)
            [
                (tasks.fail_always.using(priority=40 - i), (), {"message": [i, "é\t\n\\"]})
                for i in range(6)
            ]
            + [
                (tasks.send_welcome_email.using(priority=5), (7,), {}),
                (tasks.per_account.using(concurrency_key="acct-1", priority=1), ("a",), {}),
                (tasks.unique_for_a_minute.using(priority=0), (3,), {}),
            ]
        )
        order = [single.id, *(r.id for r in batch)]
        names = {Job.objects.get(pk=pk).pk: i for i, pk in enumerate(order)}
        # The results enqueue returned (built without TaskResult's init on the fast path),
        # and the ids made (without UUID's init): random version 4 UUIDs either way.
        results["enqueued"] = [result_fields(r, names) for r in [single, *batch]]
        assert all(uuid.UUID(pk).version == 4 for pk in order)
        strategy = db.for_alias("default")
        claimed = strategy.claim(queues=None, limit=4, worker_id="w1", now=T0, lease=LEASE)
        claimed += strategy.claim(
            queues=["emails", "default"], limit=3, worker_id="w2", now=T0, lease=LEASE
        )
        keyed = Job.objects.get(pk=batch[7].id).pk
        claimed += db.start_jobs("default", [keyed], worker_id="w3", now=T0, lease=LEASE)
        results["claimed"] = [fields(job, names) for job in claimed]
        later = T0 + timedelta(seconds=5)
        one, two, three, four, five, *_ = claimed
        results["successes"] = sorted(
            names[pk]
            for pk in services.record_successes(
                [
                    services.Success(one, {"sum": 3}, later, http_status=200),
                    services.Success(two, [1, "x"], later, started_at=T0 + timedelta(seconds=1)),
                    services.Success(five, None, later),  # (not w1's: not recorded)
                ],
                worker_id="w1",
                using="default",
            )
        )
        results["success"] = services.record_success(
            three, worker_id="w1", return_value="done", now=later
        )
        results["failure"] = str(
            services.record_failure(
                four, worker_id="w1", error=ValueError("no\x00pe"), now=later, traceback_text="tb"
            )
        )
        results["final"] = str(
            services.record_failure(
                five, worker_id="w2", error=KeyError("k"), now=later, retryable=False
            )
        )
        results["results"] = [
            result_fields(default_task_backend.get_result(pk), names) for pk in order
        ]
        results["jobs"] = sorted(
            (fields(job, names) for job in Job.objects.all()), key=lambda f: f["id"][1]
        )
        results["attempts"] = sorted(
            (
                {
                    **{f.attname: getattr(a, f.attname) for f in Attempt._meta.concrete_fields},
                    "id": None,
                    "job_id": names[a.job_id],
                }
                for a in Attempt.objects.all()
            ),
            key=lambda a: (a["job_id"], a["number"]),
        )
    return results


def test_the_fast_path_and_the_orm_store_and_return_the_same():
    fast, slow = scenario(True), scenario(False)
    assert len(fast["claimed"]) == 8
    assert fast["successes"] == [0, 1]
    assert fast["success"] is True
    for key in fast:
        assert fast[key] == slow[key], key


def test_the_per_alias_caches_are_dropped_when_settings_change():
    """Statement texts and column plans are computed once per alias, and forgotten on a
    change of DATABASES or ASYNCJOBS (``override_settings`` in a test)."""
    tasks.add.enqueue(1, 2)
    db.for_alias("default").claim(queues=None, limit=1, worker_id="w", now=T0, lease=LEASE)
    assert "default" in rows._COLUMNS
    with fast_path(False):
        assert "default" not in rows._COLUMNS
        tasks.add.enqueue(1, 2)
        db.for_alias("default").claim(queues=None, limit=1, worker_id="w", now=T0, lease=LEASE)
        assert "default" in rows._COLUMNS
    assert "default" not in rows._COLUMNS


def test_new_jobs_are_the_same_made_either_way():
    """A job made by the fast path (filled in through ``__dict__``) equals, field by field
    and in its instance state, the one the model's init makes with the fast path off."""
    made = {}
    for on in (True, False):
        with fast_path(on), freeze_time(T0):
            job = default_task_backend.build_job(tasks.add, (1, [2]), {"b": 3}, T0)
            assert (fastpath.direct_jobs() if on else not fastpath.direct_jobs()) is True
            made[on] = (
                {
                    f.attname: getattr(job, f.attname)
                    for f in Job._meta.concrete_fields
                    if f.attname != "id"
                },
                (job._state.adding, job._state.db),
                type(job.pk),
            )
    assert made[True] == made[False]


def test_signals_are_sent_alike_either_way(caplog):
    """With the fast path off every signal is sent (no peek at Django's private list of
    receivers); what the receivers log is the same."""
    # Django's own tasks log as "django.tasks", the django-tasks backport (Django 5.2) as
    # "django_tasks".
    loggers = ("django.tasks", "django_tasks")
    for name in loggers:
        caplog.set_level("DEBUG", logger=name)
    logged = {}
    for on in (True, False):
        caplog.clear()
        with fast_path(on):
            result = tasks.add.enqueue(1, 2)
        logged[on] = [
            r.getMessage().replace(result.id, "<id>") for r in caplog.records if r.name in loggers
        ]
    assert logged[True] == logged[False] != []


@pytest.mark.parametrize("on", [True, False], ids=["fast-path", "orm"])
def test_a_claim_writes_every_attempt_row_in_chunks(monkeypatch, on):
    """The attempt rows of a claim (SQLite, MariaDB/MySQL: a multi-row INSERT per
    ATTEMPTS_PER_INSERT jobs with the fast path on; PostgreSQL: the claim statement), one
    per job, whatever the number of chunks."""
    monkeypatch.setattr(rows, "ATTEMPTS_PER_INSERT", 3)
    enqueue_many([(tasks.add, (i, i), {}) for i in range(7)])
    with fast_path(on):
        claimed = db.for_alias("default").claim(
            queues=None, limit=7, worker_id="w", now=T0, lease=LEASE
        )
    assert len(claimed) == 7
    stored = Attempt.objects.values_list("job_id", "number", "worker_id", "started_at", "outcome")
    assert sorted(stored) == sorted((job.pk, 1, "w", T0, "") for job in claimed)


def test_same_receivers_sees_every_change_of_a_signals_receivers():
    """``same_receivers`` holds while a signal has the very receivers it had when
    ``receivers_seen`` looked, and fails after any connect or disconnect that changed them,
    or once a weak receiver is collected."""
    from django.dispatch import Signal

    signal = Signal()

    def a(**kwargs):
        pass

    def b(**kwargs):
        pass

    with fast_path(True):
        seen = fastpath.receivers_seen(signal)
        assert fastpath.same_receivers(signal, seen)
        signal.connect(a)
        assert not fastpath.same_receivers(signal, seen)
        seen = fastpath.receivers_seen(signal)
        signal.connect(b)
        signal.disconnect(b)  # (back to the same receivers)
        assert fastpath.same_receivers(signal, seen)
        signal.connect(b)
        signal.disconnect(a)  # (as many, another one)
        assert not fastpath.same_receivers(signal, seen)
        seen = fastpath.receivers_seen(signal)
        signal.disconnect(b)
        signal.connect(b)  # (the same receiver, connected again)
        assert not fastpath.same_receivers(signal, seen)
        seen = fastpath.receivers_seen(signal)
        del b
        gc.collect()
        assert not fastpath.same_receivers(signal, seen)
        seen = fastpath.receivers_seen(signal)
    with fast_path(False):
        assert fastpath.receivers_seen(signal) is None
        assert not fastpath.same_receivers(signal, seen)


def test_a_shared_value_prepared_for_one_insert_is_not_taken_for_another():
    """``row`` takes the last preparation of a shared column while its value is the very
    same object: tasks of different policies enqueued in turn store each their own."""
    for _ in range(2):
        for task in (tasks.add, tasks.fail_always, tasks.add.using(max_attempts=5)):
            task.enqueue(1, 1) if task is not tasks.fail_always else task.enqueue()
    stored = list(Job.objects.order_by("enqueued_at").values_list("backoff", "max_attempts"))
    made = [
        (
            default_task_backend.build_job(task, (), {}, T0).backoff,
            default_task_backend.build_job(task, (), {}, T0).max_attempts,
        )
        for task in (tasks.add, tasks.fail_always, tasks.add.using(max_attempts=5))
    ]
    assert stored == made * 2
