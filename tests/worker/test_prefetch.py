"""Claiming ahead of free slots (prefetch): how much a worker holds, giving back jobs it never
started, cancelling a job that waits in the buffer, and the attempt's start time."""

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs import cancel_job, enqueue_many
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import Attempt, AttemptOutcome, Job, JobStatus, Worker, WorkerStatus
from asyncjobs.services import record_failure, rescue_expired, unclaim_jobs
from asyncjobs.worker.executor import Executor
from asyncjobs.worker.prefetch import PREFETCH_MAX_WAIT, PREFETCH_WINDOW, Prefetch
from asyncjobs.worker.runner import Runner
from asyncjobs.worker.slots import Execution
from tests import tasks
from tests.conftest import wait_until
from tests.models import Execution as Ran

LEASE = timedelta(seconds=30)


def claim(r, worker_id, n, now):
    return r.strategy.claim(queues=None, limit=n, worker_id=worker_id, now=now, lease=LEASE)


@pytest.mark.django_db
def test_unclaim_undoes_a_first_claim(runner):
    result = tasks.add.enqueue(1, 2)
    r = runner()
    (job,) = claim(r, "w", 1, timezone.now())
    assert unclaim_jobs([job], worker_id="w", using="default") == 1
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.QUEUED
    assert (job.attempts, job.worker_id, job.lease_expires_at) == (0, "", None)
    assert job.started_at is None and job.last_attempted_at is None
    assert not Attempt.objects.exists()
    assert runner().drain() == 1
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert [a.number for a in job.attempt_set.all()] == [1]


@pytest.mark.django_db
def test_unclaim_of_a_retry_keeps_the_history_before_it(runner):
    result = tasks.add.using(max_attempts=3).enqueue(1, 2)
    r = runner()
    first_at = timezone.now()
    (job,) = claim(r, "w", 1, first_at)
    record_failure(job, worker_id="w", error=ConnectionError("down"), now=first_at)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)  # retry due now
    (job,) = claim(r, "w", 1, first_at + timedelta(seconds=5))
    assert job.attempts == 2
    assert unclaim_jobs([job], worker_id="w", using="default") == 1
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.QUEUED and job.attempts == 1
    assert job.started_at == job.last_attempted_at == first_at
    assert [(a.number, a.outcome) for a in job.attempt_set.all()] == [(1, AttemptOutcome.FAILED)]


@pytest.mark.django_db
def test_unclaim_leaves_jobs_that_are_no_longer_ours(runner):
    now = timezone.now()
    result = tasks.add.using(max_attempts=2).enqueue(1, 2)
    (job,) = claim(runner(), "w", 1, now)
    assert rescue_expired(now=now + LEASE + timedelta(seconds=1)) == 1
    assert unclaim_jobs([job], worker_id="w", using="default") == 0
    job = Job.objects.get(pk=result.id)
    assert job.attempts == 1
    assert job.attempt_set.get().outcome == AttemptOutcome.LOST


@pytest.mark.django_db
def test_a_job_cancelled_while_buffered_never_starts(runner, backend):
    result = tasks.record.enqueue("never")
    r = runner()
    now = timezone.now()
    (job,) = claim(r, r.worker_id, 1, now)
    assert cancel_job(result.id).status == JobStatus.RUNNING  # asked to stop
    execution = Execution(job=job)
    execution.cancel_event.set()  # as the heartbeat relays it
    status = Executor(backend, r.worker_id, clock=lambda: now + timedelta(seconds=1)).run(execution)
    assert status == JobStatus.CANCELLED
    assert not Ran.objects.filter(label="never").exists()
    attempt = Job.objects.get(pk=result.id).attempt_set.get()
    assert attempt.outcome == AttemptOutcome.CANCELLED
    assert attempt.error_message == "cancelled before it started"


@pytest.mark.django_db
def test_the_attempt_starts_when_the_task_starts_not_at_the_claim(runner, backend):
    result = tasks.add.enqueue(1, 2)
    r = runner()
    claimed_at = timezone.now()
    (job,) = claim(r, r.worker_id, 1, claimed_at)
    began = claimed_at + timedelta(milliseconds=40)  # waited in the buffer
    Executor(backend, r.worker_id, clock=lambda: began).run(Execution(job=job))
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.last_attempted_at == job.attempt_set.get().started_at == began
    # The job's started_at is its claim's, read the same while it ran (django.tasks).
    assert job.started_at == claimed_at


def test_prefetch_target_follows_the_pace_of_recent_jobs():
    p = Prefetch(slots=4, most=64)
    assert p.target([]) == 0  # nothing ran yet: no pace to go by
    p.observe(0.0005)
    assert p.target([]) == 64  # fast jobs: up to the cap
    p.observe(0.05)  # a slower job counts at once
    assert p.target([]) == int(4 * PREFETCH_WINDOW / 0.05)
    p.observe(2.0)
    assert p.target([]) == 0  # jobs longer than the window: claim only for slots
    for _ in range(60):
        p.observe(0.001)  # fast again: it comes back gradually
    assert p.target([]) == 64
    # Slots held by long-running jobs will not take prefetched jobs soon.
    p.observe(0.01)
    assert p.target([]) == int(4 * PREFETCH_WINDOW / 0.01)
    assert p.target([PREFETCH_MAX_WAIT] * 3) == int(1 * PREFETCH_WINDOW / 0.01)
    assert p.target([PREFETCH_MAX_WAIT] * 4) == 0
    without = Prefetch(slots=4, most=0)
    without.observe(0.0005)
    assert without.target([]) == 0


def test_a_worker_sizes_its_prefetch_by_its_concurrency_and_flag():
    r = Runner(concurrency=4, prefetch=64)
    assert (r.sizing.slots, r.sizing.most) == (4, 64)
    assert Runner(concurrency=4, prefetch=0).sizing.most == 0


def test_prefetch_must_not_be_negative():
    with pytest.raises(ConfigurationError, match="prefetch"):
        Runner(prefetch=-1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_jobs_stuck_behind_a_long_job_are_given_back_to_other_workers(worker_process):
    """A worker with one slot and a prefetch buffer takes a long job and the fast jobs after
    it in one claim; the fast ones wait past PREFETCH_MAX_WAIT, are given back unstarted (no
    attempt recorded) and another worker runs them while the long job still runs."""
    a = worker_process("--concurrency", "1", "--prefetch", "8")
    warmup = enqueue_many([(tasks.add, (i, i), {}) for i in range(20)])
    wait_until(
        lambda: Job.objects.filter(pk__in=[w.id for w in warmup], status="succeeded").count() == 20,
        timeout=30,
        message="warm-up jobs done (the worker has a pace)",
    )
    long_job, *fast = enqueue_many(
        [(tasks.sleep_for.using(priority=10), (6,), {})]
        + [(tasks.add, (i, 1), {}) for i in range(5)]
    )
    fast_ids = [f.id for f in fast]
    wait_until(
        lambda: Job.objects.get(pk=long_job.id).status == JobStatus.RUNNING,
        message="long job running",
    )
    wait_until(
        lambda: "gave back" in a.output(), timeout=PREFETCH_MAX_WAIT + 10, message="given back"
    )
    b = worker_process("--concurrency", "2")
    wait_until(
        lambda: Job.objects.filter(pk__in=fast_ids, status="succeeded").count() == 5,
        timeout=30,
        message="the fast jobs done by the other worker",
    )
    assert Job.objects.get(pk=long_job.id).status == JobStatus.RUNNING
    worker_b = Worker.objects.exclude(pk=Job.objects.get(pk=long_job.id).worker_id).get()
    for job in Job.objects.filter(pk__in=fast_ids):
        (attempt,) = job.attempt_set.all()  # the given-back claim left no attempt behind
        assert attempt.number == 1 and attempt.worker_id == worker_b.pk
    wait_until(
        lambda: Job.objects.get(pk=long_job.id).status == JobStatus.SUCCEEDED,
        timeout=30,
        message="long job done",
    )
    for worker in (a, b):
        worker.signal(15)
        assert worker.wait(30) == 0, worker.output()
    assert set(Worker.objects.values_list("status", flat=True)) == {WorkerStatus.STOPPED}


def test_an_executions_cancel_event_is_made_once_when_first_asked_for():
    """Most jobs never need their cancel event, so it is made on first use; threads asking
    at once (the heartbeat relaying a cancel, the slot handing it to a task) share one."""
    execution = Execution(job=Job())
    assert not execution.cancel_requested()
    seen = []
    threads = [
        threading.Thread(target=lambda: seen.append(execution.cancel_event)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(seen) == 8 and all(event is seen[0] for event in seen)
    assert not execution.cancel_requested()
    seen[0].set()
    assert execution.cancel_requested()
