"""The django.tasks API on top of asyncjobs: enqueue, results, statuses, signals."""

import copy
import gc
import logging
import pickle
import uuid
from dataclasses import fields
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models.signals import pre_init
from django.utils import timezone

from asyncjobs import db, enqueue_many, services
from asyncjobs.backend import JobsBackend
from asyncjobs.db import fastpath
from asyncjobs.db.fastpath import objects as fastpath_objects
from asyncjobs.exceptions import ArgumentsTooLargeError, InvalidArgumentsError, QueueFullError
from asyncjobs.models import Attempt, Job, JobStatus
from asyncjobs.services import observed
from asyncjobs.tasks_api import (
    LOGGER_NAME,
    InvalidTask,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    normalize_json,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from tests import tasks
from tests.models import Account

pytestmark = pytest.mark.django_db


def test_backend_features():
    backend = task_backends["default"]
    assert isinstance(backend, JobsBackend)
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority


def test_enqueue_stores_a_queued_job_and_returns_a_ready_result():
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.args == [2, 3]
    assert result.attempts == 0
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.QUEUED
    assert job.task_path == "tests.tasks.add"
    assert job.queue_name == "default"
    assert job.enqueued_at == job.run_after == result.enqueued_at


def test_task_options_are_stored_on_the_job():
    result = tasks.send_welcome_email.enqueue(7)
    job = Job.objects.get(pk=result.id)
    assert (job.queue_name, job.priority, job.max_attempts) == ("emails", 10, 5)
    assert job.timeout == timedelta(seconds=30)
    assert job.backoff["kind"] == "exponential"
    assert job.retry_on == ["builtins.Exception"]


def test_using_overrides_django_and_asyncjobs_options():
    when = timezone.now() + timedelta(hours=24)
    result = tasks.send_welcome_email.using(
        run_after=when, priority=-5, max_attempts=2, timeout=5, queue_name="low"
    ).enqueue(1)
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.SCHEDULED
    assert job.run_after == when
    assert (job.priority, job.max_attempts, job.queue_name) == (-5, 2, "low")
    assert job.timeout == timedelta(seconds=5)


def test_run_after_in_the_past_is_ready_at_once():
    result = tasks.add.using(run_after=timezone.now() - timedelta(minutes=1)).enqueue(1, 1)
    assert Job.objects.get(pk=result.id).status == JobStatus.QUEUED


def test_unknown_queue_is_refused():
    with pytest.raises(InvalidTask, match="Queue 'nope'"):
        tasks.add.using(queue_name="nope").enqueue(1, 2)
    assert not Job.objects.exists()


def test_invalid_options_are_refused():
    with pytest.raises(InvalidTask, match="max_attempts"):
        tasks.add.using(max_attempts=0)
    with pytest.raises(InvalidTask, match="timeout"):
        tasks.add.using(timeout=-1)


def test_priority_out_of_range_is_refused():
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=101)


@pytest.mark.parametrize(
    "bad",
    [
        object(),
        {1, 2},
        float("nan"),
        float("-inf"),
        timezone.now(),
        {"nested": [object()]},
    ],
    ids=["object", "set", "nan", "-inf", "datetime", "nested"],
)
def test_non_json_arguments_fail_at_enqueue_and_store_nothing(bad):
    with pytest.raises(InvalidArgumentsError, match="JSON-serializable"):
        tasks.add.enqueue(bad, 1)
    with pytest.raises(TypeError):  # InvalidArgumentsError is a TypeError too
        tasks.add.enqueue(1, b=bad)
    assert not Job.objects.exists()


# Valid JSON that PostgreSQL's jsonb cannot hold as such: stored wrapped, read back as given.
AWKWARD_JSON = [
    "nul\x00",
    {"k\x00": ["\x00", {"deep\x00": "\x00"}]},
    "lone \ud800 high and \udfff low surrogates",
    "a pair is fine: \U0001f600",
    {"$asyncjobs:json": "looks wrapped"},
    {"$asyncjobs:json": "looks wrapped", "but": "two keys"},
    "\\u0000 spelled out",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", AWKWARD_JSON)
def test_any_json_value_round_trips_on_every_database(runner, value):
    """Arguments, keyword arguments, return values and progress metadata come back as
    given, through the single and the bulk enqueue, the claim and the batch completion."""
    single = tasks.echo.enqueue(value)
    keyword = tasks.echo.enqueue(value=value)
    (bulk,) = enqueue_many([(tasks.echo, (value,), {})])
    for result in (single, keyword, bulk):
        stored = Job.objects.get(pk=result.id)
        assert stored.args == ([] if result is keyword else [value])
        assert tasks.echo.get_result(result.id).args == stored.args
    runner().drain()
    for result in (single, keyword, bulk):
        final = tasks.echo.get_result(result.id)
        assert final.status == TaskResultStatus.SUCCESSFUL
        assert final.return_value == value
    assert tasks.echo.get_result(keyword.id).kwargs == {"value": value}


@pytest.mark.django_db
def test_unique_keys_see_awkward_arguments_as_they_are():
    first = tasks.unique_add.enqueue("a\x00", 1)
    assert tasks.unique_add.enqueue("a\x00", 1).id == first.id
    assert tasks.unique_add.enqueue("a", 1).id != first.id


def test_a_literal_backslash_u0000_is_not_mistaken_for_nul():
    """The NUL check looks for the escape json.dumps writes; text that merely spells it is
    looked at exactly and stored."""
    result = tasks.add.enqueue("\\u0000", {"\\u0000": "x"})
    assert Job.objects.get(pk=result.id).args == ["\\u0000", {"\\u0000": "x"}]


@pytest.mark.parametrize(
    "value",
    [
        [],
        (),
        {},
        [1, "a", 2.5, True, None],
        (1, "a"),
        {"a": 1, "b": None},
        [JobStatus.QUEUED, b"bytes"],  # a str subclass and bytes: the general path
        {1: "int key"},
        [[1, (2, 3)], {"k": (4,)}],
    ],
)
def test_arguments_are_normalised_as_django_normalises_them(value):
    """storable_json copies flat lists and dicts of scalars directly; whatever path it takes,
    the result must be Django's normalize_json's, as a new object."""
    stored = services.storable_json(value)
    assert stored == normalize_json(value)
    assert [type(x) for x in stored] == [type(x) for x in normalize_json(value)]
    assert stored is not value
    if isinstance(value, list):  # a built job holds copies of the caller's arguments too
        kwargs = {"k": value}
        job = default_task_backend.build_job(tasks.add, value, kwargs, timezone.now())
        assert job.args is not value and job.kwargs is not kwargs


def test_the_result_of_a_new_job_equals_the_one_built_from_the_stored_row():
    """enqueue() sets the result's fields directly; it must equal TaskResult's own init."""
    for task, args, kwargs in [
        (tasks.add, (1, [2, (3,)]), {}),
        (tasks.add.using(run_after=timezone.now() + timedelta(hours=1)), (), {"b": {"c": 1}}),
    ]:
        result = task.enqueue(*args, **kwargs)
        job = Job.objects.get(pk=result.id)
        assert result == default_task_backend.to_result(job, task=task, attempts=[])
        assert type(result.args) is list and type(result.kwargs) is dict


def test_a_stored_jobs_result_equals_the_one_taskresults_init_builds():
    """to_result sets the result's fields directly; it must equal TaskResult's own init,
    for a job with a history of attempts and a return value too."""
    result = tasks.add.enqueue(1, [2, (3,)], b={"c": [None, 1.5]})
    job = Job.objects.get(pk=result.id)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED,
        attempts=2,
        started_at=now,
        last_attempted_at=now,
        finished_at=now,
        return_value={"sum": 6},
    )
    Attempt.objects.create(
        job=job, number=1, worker_id="w1", started_at=now, error_class="x.Boom", traceback="tb"
    )
    Attempt.objects.create(job=job, number=2, worker_id="w2", started_at=now, finished_at=now)
    job.refresh_from_db()
    built = default_task_backend.to_result(job, task=tasks.add)
    expected = TaskResult(
        task=tasks.add,
        id=str(job.pk),
        status=TaskResultStatus.SUCCESSFUL,
        enqueued_at=job.enqueued_at,
        started_at=now,
        finished_at=now,
        last_attempted_at=now,
        args=job.args,
        kwargs=job.kwargs,
        backend="default",
        errors=[TaskError(exception_class_path="x.Boom", traceback="tb")],
        worker_ids=["w1", "w2"],
    )
    object.__setattr__(expected, "_return_value", {"sum": 6})
    assert built == expected
    assert built.return_value == {"sum": 6}
    assert [f.name for f in fields(built)] == [f.name for f in fields(expected)]


def test_every_supported_django_takes_the_results_fast_path():
    """On Django 5.2 (the backport's TaskResult), 6.0 and 6.1 TaskResult has exactly the
    fields to_result sets, so the matrix's sessions run the direct path that the test above
    compares with TaskResult's init; a version whose TaskResult differs takes the init."""
    assert fastpath_objects._RESULT_FIELDS_KNOWN


def test_a_worker_loads_each_task_once_per_queue_and_priority(monkeypatch):
    """load_task gives the same (frozen) Task for jobs of one task, queue and priority, a
    new one when those differ, and follows the task path to whatever it names now."""
    backend = default_task_backend
    first = Job.objects.get(pk=tasks.add.enqueue(1, 2).id)
    second = Job.objects.get(pk=tasks.add.enqueue(3, 4).id)
    urgent = Job.objects.get(pk=tasks.add.using(priority=9).enqueue(5, 6).id)
    loaded = backend.load_task(first)
    assert backend.load_task(second) is loaded
    assert (loaded.func, loaded.priority, loaded.queue_name) == (tasks.add.func, 0, "default")
    other = backend.load_task(urgent)
    assert other is not loaded and other.priority == 9 and other.func is tasks.add.func
    monkeypatch.setattr(tasks, "add", tasks.noop)
    assert backend.load_task(first).func is tasks.noop.func


def test_get_result_unknown_or_malformed_id():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("00000000-0000-0000-0000-000000000000")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-uuid")


def test_get_result_through_the_task_checks_the_task():
    result = tasks.add.enqueue(1, 2)
    assert tasks.add.get_result(result.id).id == result.id
    from asyncjobs.tasks_api import TaskResultMismatch

    with pytest.raises(TaskResultMismatch):
        tasks.noop.get_result(result.id)


def test_return_value_before_finishing_raises():
    result = tasks.add.enqueue(1, 2)
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value


@pytest.mark.django_db(transaction=True)
def test_enqueue_inside_atomic_commits_with_the_business_row():
    with transaction.atomic():
        Account.objects.create(name="ada")
        result = tasks.add.enqueue(1, 2)
    assert Job.objects.filter(pk=result.id).exists()


@pytest.mark.django_db(transaction=True)
def test_enqueue_inside_atomic_is_gone_on_rollback():
    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        Account.objects.create(name="ada")
        result = tasks.add.enqueue(1, 2)
        raise Boom
    assert not Account.objects.exists()
    assert not Job.objects.filter(pk=result.id).exists()


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_uncommitted_job_is_invisible_to_a_worker_until_commit(runner):
    """A worker (another connection: another thread) cannot claim what is not committed.

    Not on SQLite: the open write transaction holds the database lock, so a
    worker's claim waits for the commit instead of running beside it.
    """
    import threading

    claimed = []

    def work():
        from django.db import connections

        claimed.append(runner().run_once())
        connections.close_all()

    with transaction.atomic():
        tasks.add.enqueue(1, 2)
        t = threading.Thread(target=work)
        t.start()
        t.join(30)
    assert claimed == [0]
    assert runner().run_once() == 1


def test_enqueue_many_one_insert_all_results(django_assert_num_queries):
    calls = [(tasks.add, (i, i), {}) for i in range(50)]
    calls.append((tasks.send_welcome_email, (1,), {}))
    with django_assert_num_queries(3):  # SAVEPOINT, INSERT, RELEASE
        results = enqueue_many(calls)
    assert len(results) == 51
    assert [r.args for r in results[:3]] == [[0, 0], [1, 1], [2, 2]]
    assert Job.objects.count() == 51
    assert Job.objects.get(pk=results[-1].id).queue_name == "emails"
    with django_assert_num_queries(1) as captured:  # one enqueue: its INSERT, logged too
        tasks.add.enqueue(1, 2)
    assert captured.captured_queries[0]["sql"].startswith("INSERT INTO")


def test_enqueue_many_is_all_or_nothing():
    calls = [(tasks.add, (1, 2), {}), (tasks.add, (object(), 2), {})]
    with pytest.raises(InvalidArgumentsError):
        enqueue_many(calls)
    assert not Job.objects.exists()
    assert enqueue_many([]) == []


@pytest.mark.django_db(transaction=True)
def test_a_bad_call_after_rows_were_written_stores_nothing():
    """Jobs are built while the ones before are being written (COPY on PostgreSQL): a call
    that fails after a few thousand rows went out rolls all of them back, in autocommit as
    in the caller's transaction, and leaves the connection usable."""
    seen = []
    task_enqueued.connect(receiver := lambda sender, **kw: seen.append(kw), weak=False)
    try:
        good = [(tasks.add, (i, i), {}) for i in range(2 * db.COPY_CHUNK + 500)]
        with pytest.raises(InvalidArgumentsError):
            enqueue_many([*good, (tasks.add, (float("nan"), 1), {}), *good[:10]])
        assert not Job.objects.exists() and not seen  # (sent only once all are stored)
        with pytest.raises(InvalidArgumentsError), transaction.atomic():
            tasks.add.enqueue(0, 0)
            enqueue_many([*good[:5], (tasks.add, ({"x": object()}, 1), {})])
        assert not Job.objects.exists()
    finally:
        task_enqueued.disconnect(receiver)
    assert len(enqueue_many(good[:3])) == 3 and Job.objects.count() == 3


def test_enqueue_many_checks_every_task_and_keeps_each_tasks_options():
    retried = tasks.add.using(max_attempts=7, priority=5)
    calls = [(tasks.add, (i, i), {}) for i in range(3)] + [(retried, (9, 9), {})]
    results = enqueue_many(calls)
    jobs = [Job.objects.get(pk=r.id) for r in results]
    assert [(j.max_attempts, j.priority) for j in jobs] == [(3, 0)] * 3 + [(7, 5)]
    with pytest.raises(InvalidTask, match="Queue 'nope'"):
        enqueue_many([*calls, (tasks.add.using(queue_name="nope"), (1, 2), {})])
    assert Job.objects.count() == 4


def test_enqueue_many_refuses_mixed_backends(settings):
    settings.TASKS = {
        **settings.TASKS,
        "other": {"BACKEND": "asyncjobs.backend.JobsBackend", "QUEUES": ["default"]},
    }
    other = tasks.add.using(backend="other")
    with pytest.raises(ValueError, match="one backend"):
        enqueue_many([(tasks.add, (1, 2), {}), (other, (1, 2), {})])


def test_signals_started_and_finished_are_sent_by_the_worker(runner):
    events = []

    def on_started(sender, task_result, **kwargs):
        events.append(("started", task_result.status, task_result.attempts))

    def on_finished(sender, task_result, **kwargs):
        events.append(("finished", task_result.status, task_result.return_value))

    task_started.connect(on_started)
    task_finished.connect(on_finished)
    try:
        tasks.add.enqueue(2, 2)
        runner().drain()
    finally:
        task_started.disconnect(on_started)
        task_finished.disconnect(on_finished)
    assert events == [
        ("started", TaskResultStatus.RUNNING, 1),
        ("finished", TaskResultStatus.SUCCESSFUL, 4),
    ]


def test_django_logs_each_jobs_start_and_end_when_its_logger_takes_info(runner, caplog):
    """With only Django's own log receivers connected, the worker skips building the
    signals' results when django.tasks would drop the records, and still logs them when
    it would not."""
    sender = type(default_task_backend)
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    assert (
        observed(task_started, sender, logging.INFO) is not fastpath.enabled()
    )  # (off: always sent)
    assert (
        observed(task_finished, sender, logging.INFO) is not fastpath.enabled()
    )  # (off: always sent)
    assert observed(task_finished, sender, logging.ERROR)
    result = tasks.add.enqueue(1, 1)
    runner().drain()
    assert not [r for r in caplog.records if r.name == LOGGER_NAME]

    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    assert observed(task_started, sender, logging.INFO)
    result = tasks.add.enqueue(2, 2)
    runner().drain()
    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert logged == [
        f"Task id={result.id} path=tests.tasks.add state=RUNNING",
        f"Task id={result.id} path=tests.tasks.add state=SUCCESSFUL",
    ]


def test_a_receiver_of_the_workers_signals_is_always_sent_them(caplog):
    sender = type(default_task_backend)
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)

    def receiver(**kwargs):
        pass

    for signal in (task_started, task_finished):
        signal.connect(receiver)
        try:
            assert observed(signal, sender, logging.INFO)
        finally:
            signal.disconnect(receiver)
        assert (
            observed(signal, sender, logging.INFO) is not fastpath.enabled()
        )  # (off: always sent)


@pytest.mark.django_db
def test_task_enqueued_is_sent_when_it_could_have_an_effect(caplog, settings):
    """Without a receiver of its own, enqueueing skips task_enqueued while Django's log
    receiver would drop its DEBUG record and RUN_INLINE is off; a receiver, DEBUG logging or
    RUN_INLINE each have it sent, for one job and for a batch."""
    sender = type(default_task_backend)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    assert (
        observed(task_enqueued, sender, logging.DEBUG) is not fastpath.enabled()
    )  # (off: always sent)
    received = []

    def receiver(sender, task_result, **kwargs):
        received.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        one = tasks.add.enqueue(1, 1)
        batch = enqueue_many([(tasks.add, (i, i), {}) for i in range(3)])
    finally:
        task_enqueued.disconnect(receiver)
    assert received == [one.id, *(r.id for r in batch)]

    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    assert observed(task_enqueued, sender, logging.DEBUG)
    logged = tasks.add.enqueue(2, 2)
    assert f"Task id={logged.id} path=tests.tasks.add enqueued backend=default" in [
        r.getMessage() for r in caplog.records if r.name == LOGGER_NAME
    ]
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "RUN_INLINE": True}
    assert observed(task_enqueued, sender, logging.DEBUG)


def test_new_jobs_get_version_4_uuids():
    """Job ids are made without UUID's init (fastpath.uuid4_direct, with the fast path on):
    still random version 4 UUIDs that behave as any other, on the Pythons asyncjobs
    supports."""
    uuid4 = fastpath.uuid4_factory()
    assert uuid4 is (fastpath.uuid4_direct if fastpath.enabled() else uuid.uuid4)
    made = [fastpath.uuid4_direct() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for value in made[:100]:
        parsed = uuid.UUID(str(value))
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert parsed == value and hash(parsed) == hash(value) and parsed.int == value.int
        assert pickle.loads(pickle.dumps(value)) == value and copy.deepcopy(value) == value
    job = default_task_backend.build_job(tasks.add, (1, 1), {}, timezone.now())
    assert type(job.pk) is uuid.UUID and job.pk.version == 4


def test_result_after_success(runner):
    result = tasks.add.enqueue(20, 22)
    runner().drain()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result.attempts == 1
    assert len(result.worker_ids) == 1
    assert result.errors == []
    assert result.enqueued_at <= result.started_at <= result.last_attempted_at
    assert result.last_attempted_at <= result.finished_at


def test_task_backends_are_separate_instances_per_alias(settings):
    settings.TASKS = {
        **settings.TASKS,
        "other": {"BACKEND": "asyncjobs.backend.JobsBackend", "QUEUES": ["default"]},
    }
    assert task_backends["other"].alias == "other"
    result = tasks.add.using(backend="other").enqueue(1, 1)
    assert Job.objects.get(pk=result.id).backend == "other"


def test_aenqueue_and_aget_result():
    from asgiref.sync import async_to_sync

    async def scenario():
        result = await tasks.add.aenqueue(5, 6)
        fetched = await tasks.add.aget_result(result.id)
        return result, fetched

    result, fetched = async_to_sync(scenario)()
    assert result.status == TaskResultStatus.READY
    assert fetched.id == result.id
    assert fetched.args == [5, 6]
    assert Job.objects.filter(pk=result.id).exists()


def test_get_result_of_a_job_whose_task_no_longer_imports():
    from asyncjobs.exceptions import TaskImportError

    result = tasks.add.enqueue(1, 2)
    Job.objects.filter(pk=result.id).update(task_path="tests.tasks.gone")
    with pytest.raises(TaskImportError, match="could not be imported"):
        default_task_backend.get_result(result.id)


# --- django.tasks contract details (issue: worker robustness, point 7) -----------------------


@pytest.mark.django_db(transaction=True)
def test_started_at_reads_the_same_while_running_and_after(runner):
    result = tasks.started_at_while_running.enqueue()
    runner().drain()
    final = tasks.started_at_while_running.get_result(result.id)
    assert final.status == TaskResultStatus.SUCCESSFUL
    assert final.return_value == final.started_at.isoformat()


@pytest.mark.django_db
def test_get_result_gives_back_the_task_as_enqueued_with_every_using_attribute():
    from datetime import timedelta

    from django.utils import timezone

    from asyncjobs import Fixed

    when = timezone.now() + timedelta(hours=1)
    used = tasks.add.using(
        run_after=when,
        priority=7,
        queue_name="emails",
        max_attempts=9,
        timeout=timedelta(seconds=12),
        backoff=Fixed(timedelta(seconds=3)),
        retry_on=(ValueError, "builtins.KeyError"),
        fail_on=(PermissionError,),
        unique_key="order-42",
        unique_for=60,
        concurrency_key="account-1",
    )
    result = used.enqueue(1, 2)
    again = tasks.add.get_result(result.id)
    assert again.task == used
    assert again.task.run_after == when
    plain = tasks.add.enqueue(3, 4)
    assert tasks.add.get_result(plain.id).task == tasks.add


@pytest.mark.django_db
@pytest.mark.parametrize("priority", [True, False, "high", 1.5, None])
def test_a_priority_that_is_not_an_integer_is_refused_clearly(priority):
    import dataclasses

    from asyncjobs.tasks_api import InvalidTask

    with pytest.raises(InvalidTask, match="priority must be an integer from -100 to 100"):
        dataclasses.replace(tasks.add, priority=priority)


@pytest.mark.django_db
def test_a_receiver_connected_after_enqueues_gets_task_enqueued(caplog):
    """Whether anyone hears task_enqueued is remembered while the signal's receivers stay
    the same (``services.observed``): a receiver connected after enqueues that skipped the
    signal gets it at once, one connected in place of another too, and once they are gone
    (disconnected, or a weak receiver collected) the signal is skipped again."""
    sender = type(default_task_backend)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    tasks.add.enqueue(1, 1)
    tasks.add.enqueue(1, 1)
    unheard = not fastpath.enabled()  # (off: always sent)
    assert observed(task_enqueued, sender, logging.DEBUG) is unheard
    received = []

    def first(sender, task_result, **kwargs):
        received.append(("first", task_result.id))

    def second(sender, task_result, **kwargs):
        received.append(("second", task_result.id))

    task_enqueued.connect(first)
    try:
        one = tasks.add.enqueue(2, 2)
        task_enqueued.connect(second)
        task_enqueued.disconnect(first)  # (as many receivers as before, another one)
        two = tasks.add.enqueue(3, 3)
    finally:
        task_enqueued.disconnect(first)
        task_enqueued.disconnect(second)
    assert received == [("first", one.id), ("second", two.id)]
    assert observed(task_enqueued, sender, logging.DEBUG) is unheard

    def weak(sender, task_result, **kwargs):  # (connected weakly: Django's default)
        received.append(("weak", task_result.id))

    task_enqueued.connect(weak)
    three = tasks.add.enqueue(4, 4)
    assert received[-1] == ("weak", three.id)
    del weak
    gc.collect()
    assert observed(task_enqueued, sender, logging.DEBUG) is unheard


@pytest.mark.django_db
def test_a_task_sees_settings_changed_after_its_first_enqueue(settings):
    """What a task's jobs share is worked out at its first enqueue and remembered; a change
    of the settings (``setting_changed``) is seen by the next enqueue: the policy, the size
    limit and a queue's cap."""
    first = tasks.add.enqueue(1, 1)
    assert Job.objects.get(pk=first.id).max_attempts == 3
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "MAX_ATTEMPTS": 7, "MAX_ARGUMENTS_BYTES": 64}
    assert Job.objects.get(pk=tasks.add.enqueue(1, 1).id).max_attempts == 7
    with pytest.raises(ArgumentsTooLargeError):
        tasks.add.enqueue("x" * 100, 1)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"default": {"MAX_QUEUED": 2}}}
    with pytest.raises(QueueFullError):
        tasks.add.enqueue(1, 1)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"default": {"MAX_QUEUED": 3}}}
    tasks.add.enqueue(1, 1)
    assert Job.objects.count() == 3


@pytest.mark.django_db
def test_an_init_receiver_connected_after_enqueues_is_sent_the_jobs_init():
    """New jobs are filled in directly while nobody listens to Job's ``pre_init`` and
    ``post_init`` (fast path); a receiver connected after enqueues gets the next job's init
    signals, and once it is disconnected they are skipped again."""
    tasks.add.enqueue(1, 1)
    inits = []

    def receiver(sender, **kwargs):
        inits.append(sender)

    pre_init.connect(receiver, sender=Job)
    try:
        tasks.add.enqueue(2, 2)
    finally:
        pre_init.disconnect(receiver, sender=Job)
    assert inits == [Job]
    tasks.add.enqueue(3, 3)
    assert inits == [Job]
    assert fastpath.direct_jobs() is fastpath.enabled()
