"""Unique jobs and idempotency keys; backpressure (MAX_QUEUED)."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from freezegun import freeze_time

from asyncjobs import enqueue_many
from asyncjobs.exceptions import QueueFull, QueueFullError
from asyncjobs.models import Job, JobStatus
from tests import tasks
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def test_unique_task_returns_the_waiting_job():
    first = tasks.unique_add.enqueue(1, 2)
    again = tasks.unique_add.enqueue(1, 2)
    other = tasks.unique_add.enqueue(2, 1)
    assert again.id == first.id
    assert other.id != first.id
    assert Job.objects.count() == 2


def test_key_is_released_when_the_job_ends(runner):
    first = tasks.unique_add.enqueue(1, 2)
    runner().drain()
    second = tasks.unique_add.enqueue(1, 2)
    assert second.id != first.id
    failed = tasks.fail_always.using(unique_key="f", max_attempts=1).enqueue()
    runner().drain()
    assert Job.objects.get(pk=failed.id).status == JobStatus.FAILED
    assert tasks.fail_always.using(unique_key="f").enqueue().id != failed.id


def test_unique_for_holds_the_key_after_success(runner):
    start = timezone.now()
    with freeze_time(start) as frozen:
        first = tasks.unique_for_a_minute.enqueue(5)
        runner().drain()
        frozen.tick(timedelta(seconds=59))
        assert tasks.unique_for_a_minute.enqueue(5).id == first.id
        frozen.tick(timedelta(seconds=2))
        assert tasks.unique_for_a_minute.enqueue(5).id != first.id


def test_running_job_holds_its_key(runner):
    first = tasks.add.using(unique_key="k").enqueue(1, 1)
    r = runner()
    r.strategy.claim(
        queues=None, limit=1, worker_id="w", now=timezone.now(), lease=timedelta(seconds=30)
    )
    assert tasks.add.using(unique_key="k").enqueue(1, 1).id == first.id


def test_bulk_with_duplicates_collapses_to_the_first():
    existing = tasks.add.using(unique_key="a").enqueue(0, 0)
    results = enqueue_many(
        [
            (tasks.add.using(unique_key="a"), (1, 1), {}),
            (tasks.add.using(unique_key="b"), (2, 2), {}),
            (tasks.add.using(unique_key="b"), (3, 3), {}),
            (tasks.add, (4, 4), {}),
        ]
    )
    assert results[0].id == existing.id
    assert results[1].id == results[2].id
    assert results[2].args == [2, 2]
    assert Job.objects.count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.subprocess
def test_concurrent_enqueues_from_several_processes_make_one_job():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "ASYNCJOBS_DB_NAME": connection.settings_dict["NAME"],
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.enqueue_unique_script", "shared-key"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(5)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        outputs.append(out.decode().strip())
    assert len(set(outputs)) == 1
    assert Job.objects.filter(unique_key="shared-key").count() == 1


@pytest.fixture
def capped(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"low": {"MAX_QUEUED": 3}}}


def test_queue_full_refuses_and_keeps_what_is_queued(capped, runner):
    low = tasks.add.using(queue_name="low")
    kept = [low.enqueue(i, i).id for i in range(3)]
    with pytest.raises(QueueFullError, match="'low' is full") as info:
        low.enqueue(9, 9)
    assert (info.value.queue, info.value.limit) == ("low", 3)
    assert QueueFull is QueueFullError
    assert sorted(map(str, Job.objects.values_list("pk", flat=True))) == sorted(kept)
    tasks.add.enqueue(1, 1)  # other queues are not capped
    runner(queues=["low"], concurrency=1).run_once()
    low.enqueue(9, 9)  # one left the queue: room again


def test_queue_full_bulk_is_all_or_nothing(capped):
    low = tasks.add.using(queue_name="low")
    low.enqueue(0, 0)
    with pytest.raises(QueueFullError):
        enqueue_many([(low, (i, i), {}) for i in range(3)])
    assert Job.objects.count() == 1
    enqueue_many([(low, (i, i), {}) for i in range(2)])
    assert Job.objects.count() == 3


def test_scheduled_jobs_count_toward_the_cap(capped):
    later = tasks.add.using(queue_name="low", run_after=timezone.now() + timedelta(hours=1))
    for _ in range(3):
        later.enqueue(1, 1)
    with pytest.raises(QueueFullError):
        tasks.add.using(queue_name="low").enqueue(1, 1)


def test_api_answers_429_when_the_queue_is_full(capped, api, users, http_server):
    body = {"callback_url": f"{http_server.url}/ok", "queue": "low"}
    for _ in range(3):
        assert api(users["client"]).post("/jobs/", body, format="json").status_code == 202
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 429
    assert response["Retry-After"] == "10"
    assert "full" in response.json()["detail"]
    assert Job.objects.count() == 3
