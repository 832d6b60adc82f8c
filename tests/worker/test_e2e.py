"""End to end: real ``manage.py runworker`` subprocesses against the test database.

Every wait is bounded (``wait_until`` and ``WorkerProcess.wait`` fail the test on time-out);
every worker is SIGKILLed at teardown if it is still running.
"""

import contextlib
import signal
import time

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from asyncjobs import cancel_job, enqueue_many, services
from asyncjobs.models import AttemptOutcome, Job, JobStatus, Worker, WorkerStatus
from tests import tasks
from tests.conftest import wait_until
from tests.models import Execution

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def status_of(result):
    return Job.objects.get(pk=result.id).status


def test_burst_worker_drains_and_exits_zero(worker_process):
    results = [tasks.add.enqueue(i, i) for i in range(20)]
    failing = tasks.fail_fast.enqueue()
    worker = worker_process("--burst", "--concurrency", "3")
    assert worker.wait(60) == 0, worker.output()
    assert Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 20
    assert {Job.objects.get(pk=r.id).return_value for r in results} == {2 * i for i in range(20)}
    assert status_of(failing) == JobStatus.FAILED
    w = Worker.objects.get()
    assert w.status == WorkerStatus.STOPPED
    assert w.concurrency == 3
    assert w.jobs_processed == 21
    assert "succeeded" in worker.output()


def test_max_jobs_exits_after_n(worker_process):
    for i in range(5):
        tasks.add.enqueue(i, 1)
    worker = worker_process("--max-jobs", "2", "--concurrency", "1")
    assert worker.wait(60) == 0, worker.output()
    assert Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 2
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 3


def test_worker_picks_up_jobs_enqueued_while_it_runs(worker_process):
    worker = worker_process("--concurrency", "2")
    wait_until(lambda: Worker.objects.filter(status=WorkerStatus.RUNNING).exists(), message="start")
    result = tasks.add.enqueue(40, 2)
    wait_until(lambda: status_of(result) == JobStatus.SUCCEEDED, message="job done")
    result.refresh()
    assert result.return_value == 42
    assert result.worker_ids == [Worker.objects.get().id]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_queue_flag_limits_the_queues(worker_process):
    email = tasks.send_welcome_email.enqueue(5)
    other = tasks.add.enqueue(1, 1)
    worker = worker_process("--burst", "--queue", "emails")
    assert worker.wait(60) == 0, worker.output()
    assert status_of(email) == JobStatus.SUCCEEDED
    assert status_of(other) == JobStatus.QUEUED


def test_sigkill_mid_job_is_rescued_by_another_worker(worker_process):
    """Worker A dies holding the job; worker B sees the lease expire, records the lost
    attempt and runs the job again."""
    timings = {"lease": 2, "heartbeat": 0.5, "maintenance": 0.5}
    result = tasks.die_once.enqueue("victim", 120)
    a = worker_process("--concurrency", "1", **timings)
    wait_until(lambda: Execution.objects.filter(label="victim").exists(), message="first run")
    a.signal(signal.SIGKILL)
    a.wait(10)
    b = worker_process("--concurrency", "1", **timings)
    wait_until(lambda: status_of(result) == JobStatus.SUCCEEDED, timeout=30, message="rescue")
    job = Job.objects.get(pk=result.id)
    attempts = list(job.attempt_set.all())
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert attempts[0].error_class == "asyncjobs.exceptions.WorkerLostError"
    assert attempts[0].worker_id != attempts[1].worker_id
    assert Execution.objects.filter(label="victim").count() == 2
    dead = Worker.objects.get(pk=attempts[0].worker_id)
    wait_until(
        lambda: Worker.objects.get(pk=dead.pk).status == WorkerStatus.LOST, message="marked lost"
    )
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0


def test_sigterm_lets_running_jobs_finish(worker_process):
    result = tasks.sleep_recorded.enqueue("finish", 1.5)
    worker = worker_process("--concurrency", "1")
    wait_until(lambda: Execution.objects.filter(label="finish").exists(), message="running")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert status_of(result) == JobStatus.SUCCEEDED
    assert Worker.objects.get().status == WorkerStatus.STOPPED


def test_sigterm_past_the_grace_period_releases_the_job(worker_process):
    result = tasks.sleep_recorded.using(max_attempts=1).enqueue("grace", 60)
    worker = worker_process("--concurrency", "1", "--shutdown-timeout", "0.5")
    wait_until(lambda: Execution.objects.filter(label="grace").exists(), message="running")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.QUEUED
    assert job.attempts_left == 1  # the released attempt is not charged
    attempt = job.attempt_set.get()
    assert attempt.outcome == AttemptOutcome.LOST
    assert attempt.error_class == "asyncjobs.exceptions.WorkerShutdownError"


def test_second_signal_exits_at_once(worker_process):
    tasks.sleep_recorded.enqueue("second-signal", 60)
    worker = worker_process("--concurrency", "1")
    wait_until(lambda: Execution.objects.filter(label="second-signal").exists(), message="running")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM received" in worker.output(), message="the first signal")
    worker.signal(signal.SIGINT)
    assert worker.wait(10) != 0
    assert "second signal, exiting now" in worker.output()


def test_timeout_is_recorded_and_the_worker_keeps_working(worker_process):
    slow = tasks.busy_past_timeout.enqueue("timeout")
    worker = worker_process("--concurrency", "1")
    wait_until(lambda: status_of(slow) == JobStatus.FAILED, timeout=30, message="timeouts")
    job = Job.objects.get(pk=slow.id)
    assert [a.outcome for a in job.attempt_set.all()] == [AttemptOutcome.TIMED_OUT] * 2
    assert "timeout" in job.attempt_set.first().error_message
    # The single slot was replaced: the worker still runs jobs.
    after = tasks.add.enqueue(1, 1)
    wait_until(lambda: status_of(after) == JobStatus.SUCCEEDED, message="job after timeout")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()


def test_cancel_a_running_job(worker_process):
    result = tasks.cancellable.enqueue("cancel-me")
    worker = worker_process("--concurrency", "1", heartbeat=0.3, lease=2)
    wait_until(lambda: Execution.objects.filter(label="cancel-me").exists(), message="running")
    cancel_job(result.id)
    wait_until(lambda: status_of(result) == JobStatus.CANCELLED, message="cancelled")
    assert Job.objects.get(pk=result.id).attempt_set.get().outcome == AttemptOutcome.CANCELLED
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_async_and_unknown_tasks_in_a_real_worker(worker_process):
    good = tasks.async_add.enqueue(1, 2)
    broken = tasks.add.using(max_attempts=1).enqueue(1, 2)
    Job.objects.filter(pk=broken.id).update(task_path="tests.tasks.removed")
    worker = worker_process("--burst")
    assert worker.wait(60) == 0, worker.output()
    assert Job.objects.get(pk=good.id).return_value == 3
    assert status_of(broken) == JobStatus.FAILED


@pytest.mark.server
def test_two_workers_drain_500_jobs_each_exactly_once(worker_process):
    # Each job waits until both workers have started one, so that both take part however
    # long either takes to start (a no-op job would let the first drain all 500 alone).
    enqueue_many([(tasks.record_beside_another_process, (f"job-{i}",), {}) for i in range(500)])
    workers = [worker_process("--burst", "--concurrency", "4") for _ in range(2)]
    for w in workers:
        assert w.wait(120) == 0, w.output()
    assert Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 500
    counts = Execution.objects.values_list("label", flat=True)
    assert len(counts) == 500 and len(set(counts)) == 500
    from asyncjobs.models import Attempt

    assert Attempt.objects.count() == 500
    per_worker = {w.id: w.jobs_processed for w in Worker.objects.all()}
    assert sum(per_worker.values()) == 500
    assert all(n > 0 for n in per_worker.values()), per_worker


@pytest.mark.postgres
def test_notify_wakes_an_idle_worker_quickly(worker_process):
    """With a 30 s poll interval only LISTEN/NOTIFY can start the job within seconds."""
    worker = worker_process("--concurrency", "1", poll=30)
    wait_until(lambda: Worker.objects.exists(), message="worker registered")
    wait_until(listening, message="the worker's LISTEN")
    # Not a wait for a result: time for the worker to finish its first look at the queue and
    # go to sleep, which it shows no sign of. Too short a pause would only let the look find
    # the job (the test would pass without proving the wake-up); it cannot make it fail.
    time.sleep(1.0)
    result = tasks.add.enqueue(1, 1)
    wait_until(lambda: status_of(result) == JobStatus.SUCCEEDED, timeout=5, message="notify")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


@pytest.mark.postgres
def test_keyed_jobs_and_pauses_reach_an_idle_worker_at_once(worker_process):
    """With a 30 s poll interval, a job under a per-key limit starts within seconds, and a
    pause and a resume take effect within seconds: PostgreSQL announces each as such, and
    the worker looks for keyed jobs or re-reads the pauses when told, not on its timer."""
    worker = worker_process("--concurrency", "2", poll=30)
    wait_until(lambda: Worker.objects.exists(), message="worker registered")
    wait_until(listening, message="the worker's LISTEN")
    # Not a wait for a result: time for the worker to go to sleep (see the test above).
    time.sleep(1.0)
    keyed = tasks.per_account.using(concurrency_key="account:1").enqueue("a")
    wait_until(lambda: status_of(keyed) == JobStatus.SUCCEEDED, timeout=5, message="keyed")
    services.set_queue_paused("default", True, now=timezone.now())
    wait_until(
        lambda: "paused queues now default" in worker.output(),
        timeout=5,
        message="the worker to see the pause",
    )
    held = tasks.add.enqueue(1, 1)
    # The measurement: the paused queue's job stays queued (a second, past any claim).
    time.sleep(1.0)
    assert status_of(held) == JobStatus.QUEUED
    services.set_queue_paused("default", False, now=timezone.now())
    wait_until(lambda: status_of(held) == JobStatus.SUCCEEDED, timeout=5, message="resumed")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()


def listening():
    """Whether some session of the test database is listening (a worker's listener)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
        )
        return cursor.fetchone()[0] > 0


def terminate_other_sessions():
    """End every other session of the test database, as a server restart or a failover
    would (the workers' connections among them)."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
            for (session,) in cursor.fetchall():
                with contextlib.suppress(DatabaseError):  # (ended meanwhile)
                    cursor.execute(f"KILL CONNECTION {int(session)}")
            return
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.mark.server
def test_worker_survives_losing_its_database_connections(worker_process):
    worker = worker_process("--concurrency", "2", heartbeat=0.5, lease=5)
    wait_until(lambda: Worker.objects.exists(), message="worker registered")
    first = tasks.add.enqueue(1, 1)
    wait_until(lambda: status_of(first) == JobStatus.SUCCEEDED, message="first job")
    terminate_other_sessions()
    results = [tasks.add.enqueue(i, 1) for i in range(5)]
    wait_until(
        lambda: all(status_of(r) == JobStatus.SUCCEEDED for r in results),
        timeout=30,
        message="jobs after reconnect",
    )
    assert worker.proc.poll() is None, "the worker must not exit"
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()


def test_sigterm_while_the_worker_waits_for_its_database_stops_it_cleanly(worker_process):
    # A database nobody answers at: the worker retries its registration until stopped.
    worker = worker_process(
        "--concurrency", "1", extra_env={"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing"}
    )
    wait_until(
        lambda: "registering the worker" in worker.output(),
        timeout=60,
        message="the worker retrying its registration",
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert "stopped while registering the worker" in worker.output()
    # Never registered: no row to mark stopping or stopped (which would retry the database
    # for seconds more).
    assert "marking the worker" not in worker.output(), worker.output()
