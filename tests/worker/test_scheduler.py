"""Cron schedules: exactly once per tick, misfire policies, time zones, config errors."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections
from freezegun import freeze_time

from asyncjobs.checks import check_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import Job, Schedule, ScheduleTick, Worker
from asyncjobs.tasks_api import task_backends
from asyncjobs.worker.maintenance.cron import Scheduler
from tests.conftest import wait_until
from tests.models import Execution

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def schedules(settings):
    def configure(**entries):
        settings.ASYNCJOBS = {**settings.ASYNCJOBS, "SCHEDULES": entries}
        return Scheduler(task_backends["default"])

    return configure


def jobs_of(name):
    return list(ScheduleTick.objects.filter(schedule=name).order_by("tick"))


@pytest.mark.django_db(transaction=True)
def test_three_workers_enqueue_each_tick_exactly_once(schedules):
    schedules(every_minute={"task": "tests.tasks.record", "cron": "* * * * *", "args": ["tick"]})
    with freeze_time(T0) as frozen:
        Scheduler(task_backends["default"]).run_due(now=T0)  # registers; no past ticks
        for minute in range(1, 6):
            frozen.move_to(T0 + timedelta(minutes=minute, seconds=1))
            now = T0 + timedelta(minutes=minute, seconds=1)
            barrier = threading.Barrier(3)

            def worker(now=now, barrier=barrier):
                try:
                    barrier.wait(10)
                    Scheduler(task_backends["default"]).run_due(now=now)
                finally:
                    connections.close_all()

            threads = [threading.Thread(target=worker) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
    ticks = jobs_of("every_minute")
    assert [t.tick for t in ticks] == [T0 + timedelta(minutes=m) for m in range(1, 6)]
    assert Job.objects.filter(task_path="tests.tasks.record").count() == 5
    assert {t.job_id for t in ticks} == set(Job.objects.values_list("pk", flat=True))
    state = Schedule.objects.get(pk="every_minute")
    assert state.last_tick == T0 + timedelta(minutes=5)
    assert state.next_tick == T0 + timedelta(minutes=6)


@pytest.mark.django_db
def test_run_once_after_downtime_enqueues_one_tick(schedules):
    scheduler = schedules(hourly={"task": "tests.tasks.noop", "cron": "0 * * * *"})
    scheduler.run_due(now=T0)
    scheduler.run_due(now=T0 + timedelta(hours=5, minutes=30))  # 5 ticks missed
    assert [t.tick for t in jobs_of("hourly")] == [T0 + timedelta(hours=5)]
    scheduler.run_due(now=T0 + timedelta(hours=5, minutes=40))
    assert len(jobs_of("hourly")) == 1


@pytest.mark.django_db
def test_skip_drops_ticks_missed_by_more_than_the_grace(schedules):
    scheduler = schedules(
        hourly={"task": "tests.tasks.noop", "cron": "0 * * * *", "misfire": "skip"}
    )
    scheduler.run_due(now=T0)
    scheduler.run_due(now=T0 + timedelta(hours=5, minutes=30))
    assert jobs_of("hourly") == []
    scheduler.run_due(now=T0 + timedelta(hours=6, seconds=20))  # within the 60 s grace
    assert [t.tick for t in jobs_of("hourly")] == [T0 + timedelta(hours=6)]


@pytest.mark.django_db
def test_time_zone_queue_priority_and_arguments(schedules):
    scheduler = schedules(
        paris={
            "task": "tests.tasks.add",
            "cron": "30 9 * * *",
            "timezone": "Europe/Paris",
            "queue": "low",
            "priority": 7,
            "args": [1],
            "kwargs": {"b": 2},
        }
    )
    scheduler.run_due(now=T0)
    scheduler.run_due(now=datetime(2026, 6, 2, 7, 31, tzinfo=UTC))  # 09:31 in Paris (CEST)
    (tick,) = jobs_of("paris")
    assert tick.tick == datetime(2026, 6, 2, 7, 30, tzinfo=UTC)
    job = Job.objects.get(pk=tick.job_id)
    assert (job.queue_name, job.priority, job.args, job.kwargs) == ("low", 7, [1], {"b": 2})


@pytest.mark.django_db
def test_a_broken_schedule_does_not_stop_the_others(schedules):
    scheduler = schedules(
        broken={"task": "tests.tasks.gone", "cron": "* * * * *"},
        fine={"task": "tests.tasks.noop", "cron": "* * * * *"},
    )
    scheduler.run_due(now=T0)
    assert scheduler.run_due(now=T0 + timedelta(minutes=1)) == ["fine"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"cron": "* * * * *"}, "needs 'task'"),
        ({"task": "tests.tasks.noop", "cron": "61 * * * *"}, "invalid cron"),
        ({"task": "tests.tasks.noop", "cron": "* * * * *", "misfire": "all"}, "misfire"),
        ({"task": "tests.tasks.noop", "cron": "* * * * *", "timezone": "Mars/Base"}, "time zone"),
        ({"task": "tests.tasks.noop", "cron": "* * * * *", "every": 5}, "unknown keys"),
    ],
)
def test_invalid_schedules_are_reported(settings, entry, message):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "SCHEDULES": {"bad": entry}}
    with pytest.raises(ConfigurationError, match=message):
        Scheduler(task_backends["default"])
    assert [m.id for m in check_settings()] == ["asyncjobs.E007"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_three_worker_processes_run_a_per_second_schedule_once_per_tick(worker_process):
    env = {"ASYNCJOBS_TEST_SCHEDULE": "* * * * * *"}  # every second (seconds field last)
    workers = [worker_process("--concurrency", "2", extra_env=env) for _ in range(3)]
    wait_until(lambda: Worker.objects.count() == 3, message="three workers")
    wait_until(lambda: ScheduleTick.objects.count() >= 4, timeout=30, message="four ticks")
    for w in workers:
        w.signal(__import__("signal").SIGTERM)
    for w in workers:
        assert w.wait(30) == 0, w.output()
    ticks = list(ScheduleTick.objects.order_by("tick").values_list("tick", flat=True))
    assert len(ticks) == len(set(ticks))
    labels = list(Execution.objects.filter(label="cron").values_list("label", flat=True))
    jobs = Job.objects.filter(task_path="tests.tasks.record")
    assert jobs.count() == len(ticks)
    assert len(labels) == jobs.filter(status="succeeded").count()
