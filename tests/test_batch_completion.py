"""``services.record_successes``: many successful attempts in one transaction, with the
same rules and the same rows as ``record_success`` one at a time."""

from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs import db
from asyncjobs.models import AttemptOutcome, Job, JobStatus
from asyncjobs.services import Success, record_success, record_successes, rescue_expired
from tests import tasks

pytestmark = pytest.mark.django_db

LEASE = timedelta(seconds=30)
FIELDS = (
    "status",
    "return_value",
    "started_at",
    "last_attempted_at",
    "finished_at",
    "worker_id",
    "lease_expires_at",
    "unique_key",
)


def claim(worker_id, n, now):
    return db.for_alias("default").claim(
        queues=None, limit=n, worker_id=worker_id, now=now, lease=LEASE
    )


def snapshot(pk):
    job = Job.objects.get(pk=pk)
    attempt = job.attempt_set.get(number=job.attempts)
    return (
        {f: getattr(job, f) for f in FIELDS},
        {f: getattr(attempt, f) for f in ("outcome", "started_at", "finished_at", "http_status")},
    )


@pytest.mark.parametrize(
    "value",
    [None, 0, "text with 'quotes' and ünïcode", [1, {"a": None}], {"nested": {"x": 1.5}}],
    ids=["none", "zero", "string", "list", "dict"],
)
def test_batch_writes_the_rows_one_at_a_time_would(value):
    now = timezone.now()
    tasks.add.enqueue(1, 1)
    tasks.add.enqueue(2, 2)
    one, other = claim("w", 2, now)
    # Both waited 3 ms in a prefetch buffer before they started.
    began, done = now + timedelta(milliseconds=3), now + timedelta(milliseconds=7)
    assert record_success(
        one, worker_id="w", return_value=value, now=done, http_status=201, started_at=began
    )
    assert record_successes(
        [Success(other, value, done, 201, started_at=began)], worker_id="w", using="default"
    ) == {other.pk}
    expected, got = snapshot(one.pk), snapshot(other.pk)
    assert got == expected
    assert got[0]["status"] == JobStatus.SUCCEEDED
    assert got[0]["return_value"] == value
    assert got[0]["last_attempted_at"] == began
    assert got[0]["started_at"] == now  # the claim's, the same as while it ran
    assert got[1] == {
        "outcome": AttemptOutcome.SUCCEEDED,
        "started_at": began,
        "finished_at": done,
        "http_status": 201,
    }


def test_each_job_keeps_its_own_value_and_end_time():
    now = timezone.now()
    for i in range(50):
        tasks.add.enqueue(i, i)
    jobs = claim("w", 50, now)
    batch = [
        Success(job, {"i": i}, now + timedelta(milliseconds=i), None) for i, job in enumerate(jobs)
    ]
    assert record_successes(batch, worker_id="w", using="default") == {j.pk for j in jobs}
    for i, job in enumerate(jobs):
        stored = Job.objects.get(pk=job.pk)
        assert stored.return_value == {"i": i}
        assert stored.finished_at == now + timedelta(milliseconds=i)
        assert stored.attempt_set.get().finished_at == now + timedelta(milliseconds=i)
    assert not Job.objects.filter(status=JobStatus.RUNNING).exists()


def test_attempts_no_longer_ours_are_left_alone():
    """A rescued job, and a job another worker holds, are not touched; the rest are."""
    now = timezone.now()
    rescued_result = tasks.add.using(max_attempts=2).enqueue(1, 1)
    (rescued,) = claim("slow", 1, now)
    assert rescue_expired(now=now + LEASE + timedelta(seconds=1)) == 1
    tasks.add.enqueue(2, 2)
    tasks.add.enqueue(3, 3)
    mine, theirs = claim("w", 1, now)[0], claim("other", 1, now)[0]

    recorded = record_successes(
        [Success(rescued, 2, now, None), Success(mine, 4, now, None)],
        worker_id="slow",
        using="default",
    )
    assert recorded == set()
    assert Job.objects.get(pk=rescued_result.id).status == JobStatus.QUEUED
    recorded = record_successes(
        [Success(mine, 4, now, None), Success(theirs, 6, now, None)],
        worker_id="w",
        using="default",
    )
    assert recorded == {mine.pk}
    assert Job.objects.get(pk=theirs.pk).status == JobStatus.RUNNING
    assert Job.objects.get(pk=theirs.pk).attempt_set.get().outcome == ""


def test_unique_keys_are_freed_or_kept_as_one_at_a_time():
    now = timezone.now()
    tasks.unique_add.enqueue(1, 1)
    tasks.unique_for_a_minute.enqueue(2)
    jobs = claim("w", 2, now)
    record_successes([Success(j, 0, now, None) for j in jobs], worker_id="w", using="default")
    keys = {Job.objects.get(pk=j.pk).unique_for: Job.objects.get(pk=j.pk).unique_key for j in jobs}
    assert keys[None] is None
    assert keys[timedelta(minutes=1)]


def test_webhooks_are_enqueued_in_the_same_transaction(settings, http_server):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "WEBHOOK_SECRET": "s3cret"}
    now = timezone.now()
    tasks.add.using(webhook_url=f"{http_server.url}/hook").enqueue(1, 1)
    (job,) = claim("w", 1, now)
    record_successes([Success(job, 2, now, None)], worker_id="w", using="default")
    delivery = Job.objects.get(task_path="asyncjobs.outbound.deliver_webhook")
    assert delivery.kwargs["job_id"] == str(job.pk)


@pytest.mark.django_db(transaction=True)
def test_completer_records_in_batches_and_reports_each_job(backend):
    """The worker's completer thread: what was handed over is recorded, in few
    transactions, and each job is reported once, succeeded or (if no longer ours) None."""
    import time

    from asyncjobs.worker.completer import Completer, Pending
    from asyncjobs.worker.executor import Executor
    from asyncjobs.worker.slots import Execution

    now = timezone.now()
    rescued_result = tasks.add.using(max_attempts=2).enqueue(0, 0)
    (rescued,) = claim("w", 1, now)
    rescue_expired(now=now + LEASE + timedelta(seconds=1))
    for i in range(40):
        tasks.add.enqueue(i, i)
    jobs = claim("w", 40, now)
    executor = Executor(backend, "w", clock=timezone.now)
    reported = []
    completer = Completer(executor, lambda execution, status: reported.append(status))
    for job in [rescued, *jobs]:
        task = backend.load_task(job)
        completer.submit(Pending(Execution(job=job), task, 1, now, time.monotonic()))
    completer.start()
    completer.stop(timeout=30)

    assert sorted(reported, key=str) == [None] + [JobStatus.SUCCEEDED] * 40
    assert completer.recorded == 40
    assert completer.batches == 1  # all were waiting when it started
    assert Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 40
    assert Job.objects.get(pk=rescued_result.id).status == JobStatus.QUEUED
