"""The worker's behaviour, in-process: ``Runner.run_once``/``drain`` with an explicit ``now``
or freezegun."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from asyncjobs import cancel_job, db, retry_job
from asyncjobs.exceptions import InvalidTransitionError, JobNotFoundError
from asyncjobs.models import Attempt, AttemptOutcome, Job, JobStatus
from asyncjobs.tasks_api import TaskResultStatus
from tests import tasks
from tests.models import Execution

pytestmark = pytest.mark.django_db


def job_of(result):
    return Job.objects.get(pk=result.id)


def test_success_lifecycle(runner):
    result = tasks.add.enqueue(1, 2)
    assert runner().run_once() == 1
    job = job_of(result)
    assert job.status == JobStatus.SUCCEEDED
    assert job.return_value == 3
    assert job.attempts == 1
    assert job.worker_id == "" and job.lease_expires_at is None
    (attempt,) = job.attempt_set.all()
    assert attempt.outcome == AttemptOutcome.SUCCEEDED
    assert attempt.started_at <= attempt.finished_at
    assert attempt.duration is not None


def test_failures_retry_with_backoff_then_dead_letter(runner):
    start = timezone.now()
    with freeze_time(start) as frozen:
        result = tasks.fail_always.enqueue("nope")
        runner().run_once()
        job = job_of(result)
        # Fixed(5 s) backoff: scheduled, not claimable before its time.
        assert job.status == JobStatus.SCHEDULED
        assert job.run_after == start + timedelta(seconds=5)
        assert runner().run_once() == 0
        frozen.tick(timedelta(seconds=5))
        assert runner().run_once() == 1
        frozen.tick(timedelta(seconds=5))
        assert runner().run_once() == 1
        job = job_of(result)
        assert job.status == JobStatus.FAILED
        assert job.finished_at == start + timedelta(seconds=10)
        frozen.tick(timedelta(hours=1))
        assert runner().run_once() == 0
    attempts = list(job.attempt_set.all())
    assert [a.outcome for a in attempts] == [AttemptOutcome.FAILED] * 3
    assert {a.error_class for a in attempts} == {"builtins.ValueError"}
    assert all("ValueError: nope" in a.traceback for a in attempts)
    assert attempts[0].error_message == "nope"
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == 3
    assert result.errors[0].exception_class is ValueError
    assert result.attempts == 3
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 40])
def test_default_exponential_backoff_stays_within_bounds(runner, attempt):
    """Full jitter: the delay after failed attempt n is in [0, min(cap, base * 2**(n-1))]."""
    start = timezone.now()
    result = tasks.flaky.using(max_attempts=50, backoff=None).enqueue("bounds", 100)
    Job.objects.filter(pk=result.id).update(attempts=attempt - 1)
    runner().run_once(now=start)
    job = job_of(result)
    ceiling = min(2.0 * 2 ** (attempt - 1), 3600.0)
    assert job.status in (JobStatus.SCHEDULED, JobStatus.QUEUED)
    assert start <= job.run_after <= start + timedelta(seconds=ceiling)


def test_flaky_task_recovers(runner):
    result = tasks.flaky.enqueue("flaky", 2)  # Fixed(0): retried at once
    runner().drain()
    job = job_of(result)
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 3
    assert [a.outcome for a in job.attempt_set.all()] == ["failed", "failed", "succeeded"]
    assert Execution.objects.filter(label="flaky").count() == 3


def test_fail_on_fails_at_once(runner):
    result = tasks.fail_fast.enqueue()
    runner().drain()
    job = job_of(result)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1
    assert job.attempt_set.get().error_class == "builtins.KeyError"


def test_error_outside_retry_on_fails_at_once(runner):
    result = tasks.wrong_kind_of_error.enqueue()
    runner().drain()
    assert job_of(result).status == JobStatus.FAILED
    assert job_of(result).attempts == 1


def test_retry_exception_sets_the_delay(runner):
    start = timezone.now()
    result = tasks.ask_retry.enqueue(90)
    runner().run_once(now=start)
    job = job_of(result)
    assert job.status == JobStatus.SCHEDULED
    assert job.run_after == start + timedelta(seconds=90)
    attempt = job.attempt_set.get()
    assert attempt.error_class == "asyncjobs.exceptions.Retry"
    assert attempt.error_message == "come back later"


def test_priority_then_run_after_then_fifo(runner):
    now = timezone.now()
    tasks.record.using(priority=0).enqueue("p0-first")
    tasks.record.using(priority=0).enqueue("p0-second")
    tasks.record.using(priority=50).enqueue("p50")
    tasks.record.using(priority=-50).enqueue("p-50")
    tasks.record.using(priority=0, run_after=now - timedelta(hours=1)).enqueue("p0-overdue")
    r = runner(concurrency=1)
    for _ in range(5):
        r.run_once()
    order = list(Execution.objects.order_by("id").values_list("label", flat=True))
    assert order == ["p50", "p0-overdue", "p0-first", "p0-second", "p-50"]


def test_run_after_waits_until_due(runner):
    now = timezone.now()
    result = tasks.add.using(run_after=now + timedelta(minutes=10)).enqueue(1, 1)
    assert runner().run_once(now=now) == 0
    assert runner().run_once(now=now + timedelta(minutes=9, seconds=59)) == 0
    assert job_of(result).status == JobStatus.SCHEDULED
    assert runner().run_once(now=now + timedelta(minutes=10)) == 1
    assert job_of(result).status == JobStatus.SUCCEEDED


def test_queue_routing(runner):
    email = tasks.send_welcome_email.enqueue(1)
    default = tasks.add.enqueue(1, 1)
    assert runner(queues=["emails"]).drain() == 1
    assert job_of(email).status == JobStatus.SUCCEEDED
    assert job_of(default).status == JobStatus.QUEUED
    assert runner(queues=["default", "low"]).drain() == 1
    assert job_of(default).status == JobStatus.SUCCEEDED


def test_unknown_queue_for_runner():
    from asyncjobs.exceptions import ConfigurationError
    from asyncjobs.worker.runner import Runner

    with pytest.raises(ConfigurationError, match="not in TASKS"):
        Runner(queues=["nope"])


def test_async_task_runs(runner):
    result = tasks.async_add.enqueue(3, 4)
    runner().drain()
    assert job_of(result).status == JobStatus.SUCCEEDED
    assert job_of(result).return_value == 7


def test_async_task_timeout_is_a_timed_out_attempt(runner):
    result = tasks.async_past_timeout.enqueue("async-timeout")
    runner().drain()
    job = job_of(result)
    assert job.status == JobStatus.FAILED
    assert [a.outcome for a in job.attempt_set.all()] == ["timed_out", "timed_out"]
    assert job.attempt_set.first().error_class == "asyncjobs.exceptions.JobTimeoutError"


def test_unknown_task_path_fails_the_job_not_the_worker(runner):
    broken = tasks.add.enqueue(1, 2)
    Job.objects.filter(pk=broken.id).update(task_path="tests.tasks.gone", max_attempts=2)
    Job.objects.filter(pk=broken.id).update(backoff={"kind": "fixed", "delay": 0})
    ok = tasks.add.enqueue(2, 2)
    runner().drain()
    job = job_of(broken)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 2
    attempt = job.attempt_set.last()
    assert attempt.error_class == "asyncjobs.exceptions.TaskImportError"
    assert "tests.tasks.gone" in attempt.error_message
    assert job_of(ok).status == JobStatus.SUCCEEDED


def test_path_to_a_non_task_fails_clearly(runner):
    result = tasks.add.enqueue(1, 2)
    Job.objects.filter(pk=result.id).update(task_path="os.getcwd", max_attempts=1)
    runner().drain()
    assert "is not a task" in job_of(result).attempt_set.get().error_message


@pytest.mark.parametrize("value", ["object", "nan", "deep"])
def test_non_json_return_value_fails_at_once(runner, value):
    result = tasks.returns_non_json.using(max_attempts=3).enqueue(value)
    runner().drain()
    job = job_of(result)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1
    attempt = job.attempt_set.get()
    assert attempt.error_class == "asyncjobs.exceptions.ResultNotSerializableError"
    assert "not JSON-serializable" in attempt.error_message


def test_context_progress_and_attempt(runner):
    result = tasks.with_context.enqueue(4)
    runner().drain()
    job = job_of(result)
    assert job.return_value == {"attempt": 1, "job": str(job.pk)}
    assert job.progress == {"current": 4, "total": 4, "message": "step 4", "percent": 100.0}


def test_retry_job_gives_a_fresh_budget_and_keeps_history(runner):
    result = tasks.fail_always.using(max_attempts=1).enqueue()
    runner().drain()
    assert job_of(result).status == JobStatus.FAILED
    job = retry_job(result.id)
    assert job.status == JobStatus.QUEUED
    assert job.attempts_left == 1
    assert job.finished_at is None
    runner().drain()
    job = job_of(result)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 2
    assert list(job.attempt_set.values_list("number", flat=True)) == [1, 2]


def test_retry_job_refuses_jobs_that_did_not_end_badly(runner):
    result = tasks.add.enqueue(1, 1)
    with pytest.raises(InvalidTransitionError, match="queued"):
        retry_job(result.id)
    runner().drain()
    with pytest.raises(InvalidTransitionError, match="succeeded"):
        retry_job(result.id)
    with pytest.raises(JobNotFoundError):
        retry_job("00000000-0000-0000-0000-000000000000")
    with pytest.raises(JobNotFoundError):
        retry_job("garbage")


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_retry_of_a_job_deleted_meanwhile_says_it_is_gone(runner):
    """A retry that waited on a job's lock while the job was deleted (pruned, discarded)
    says that no such job exists, not that a failed job cannot be retried."""
    from django.db import transaction

    from tests.conftest import start_in_thread, wait_until

    result = tasks.fail_always.using(max_attempts=1).enqueue()
    runner().drain()
    with transaction.atomic():
        Job.objects.select_for_update().get(pk=result.id)
        retried = start_in_thread(lambda: retry_job(result.id))
        with connection.cursor() as cursor:

            def retry_waits_on_the_lock():
                if connection.vendor == "mysql":
                    cursor.execute(
                        "SELECT count(*) FROM information_schema.innodb_trx "
                        "WHERE trx_state = 'LOCK WAIT'"
                    )
                    return cursor.fetchone()[0] == 1
                # (Inside a transaction the activity view is a snapshot unless cleared.)
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                return cursor.fetchone()[0] == 1

            # (InnoDB refreshes its transactions view only when it was not read for 0.1 s.)
            wait_until(
                retry_waits_on_the_lock, timeout=10, interval=0.2, message="the retry to wait"
            )
        Job.objects.filter(pk=result.id).delete()
    with pytest.raises(JobNotFoundError):
        retried()


def test_cancel_queued_and_scheduled_jobs(runner):
    queued = tasks.add.enqueue(1, 1)
    scheduled = tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    for result in (queued, scheduled):
        job = cancel_job(result.id)
        assert job.status == JobStatus.CANCELLED
        assert job.finished_at is not None
    assert cancel_job(queued.id).status == JobStatus.CANCELLED  # idempotent
    assert runner().drain(now=timezone.now() + timedelta(hours=2)) == 0
    result = tasks.add.get_result(queued.id)
    assert result.status == TaskResultStatus.FAILED
    # A cancelled job can be retried.
    retry_job(queued.id)
    assert runner().drain() == 1
    assert job_of(queued).status == JobStatus.SUCCEEDED


def test_cancel_finished_job_is_refused(runner):
    result = tasks.add.enqueue(1, 1)
    runner().drain()
    with pytest.raises(InvalidTransitionError):
        cancel_job(result.id)


def test_cancel_running_job_is_cooperative(runner):
    """A running job gets cancel_requested_at; the heartbeat relays it to the task, which
    raises JobCancelled and ends cancelled."""
    from asyncjobs.exceptions import JobCancelled
    from asyncjobs.models import JobStatus as S
    from asyncjobs.services import heartbeat, record_failure

    result = tasks.add.enqueue(1, 1)
    r = runner()
    (job,) = r.strategy.claim(
        queues=None, limit=1, worker_id=r.worker_id, now=timezone.now(), lease=timedelta(seconds=60)
    )
    assert cancel_job(result.id).status == S.RUNNING
    assert heartbeat(
        worker_id=r.worker_id,
        now=timezone.now(),
        lease=timedelta(seconds=60),
        job_ids=[str(job.pk)],
    ) == {str(job.pk)}
    status = record_failure(
        job,
        worker_id=r.worker_id,
        error=JobCancelled("stop"),
        now=timezone.now(),
        outcome=AttemptOutcome.CANCELLED,
    )
    assert status == S.CANCELLED
    assert job_of(result).attempt_set.get().outcome == AttemptOutcome.CANCELLED


def test_late_result_after_rescue_is_discarded(runner):
    """A worker whose lease expired and whose job was rescued cannot overwrite the outcome."""
    from asyncjobs.services import record_success, rescue_expired

    now = timezone.now()
    result = tasks.add.using(max_attempts=2).enqueue(1, 1)
    r = runner()
    (job,) = r.strategy.claim(
        queues=None, limit=1, worker_id="slow-worker", now=now, lease=timedelta(seconds=30)
    )
    assert rescue_expired(now=now + timedelta(seconds=31)) == 1
    rescued = job_of(result)
    assert rescued.status == JobStatus.QUEUED
    assert rescued.attempt_set.get().outcome == AttemptOutcome.LOST
    assert not record_success(job, worker_id="slow-worker", return_value=2, now=now)
    assert job_of(result).status == JobStatus.QUEUED
    runner().drain()
    assert job_of(result).status == JobStatus.SUCCEEDED
    assert [a.outcome for a in job_of(result).attempt_set.all()] == ["lost", "succeeded"]


def test_rescue_without_attempts_left_fails_the_job(runner):
    from asyncjobs.services import rescue_expired

    now = timezone.now()
    result = tasks.add.using(max_attempts=1).enqueue(1, 1)
    runner().strategy.claim(
        queues=None, limit=1, worker_id="dead", now=now, lease=timedelta(seconds=30)
    )
    rescue_expired(now=now + timedelta(minutes=1))
    job = job_of(result)
    assert job.status == JobStatus.FAILED
    assert job.attempt_set.get().error_class == "asyncjobs.exceptions.WorkerLostError"
    result.refresh()
    assert result.errors[0].exception_class_path == "asyncjobs.exceptions.WorkerLostError"


def test_release_on_shutdown_does_not_spend_an_attempt(runner):
    from asyncjobs.services import release_jobs

    now = timezone.now()
    result = tasks.add.using(max_attempts=1).enqueue(1, 1)
    (job,) = runner().strategy.claim(
        queues=None, limit=1, worker_id="stopping", now=now, lease=timedelta(seconds=30)
    )
    assert release_jobs([job], worker_id="stopping", now=now) == 1
    job = job_of(result)
    assert job.status == JobStatus.QUEUED
    assert job.attempts_left == 1
    assert job.attempt_set.get().error_class == "asyncjobs.exceptions.WorkerShutdownError"
    runner().drain()
    assert job_of(result).status == JobStatus.SUCCEEDED


def test_attempt_rows_are_unique_per_number():
    from django.db import IntegrityError, transaction

    result = tasks.add.enqueue(1, 1)
    now = timezone.now()
    Attempt.objects.create(job_id=result.id, number=1, worker_id="w", started_at=now)
    with pytest.raises(IntegrityError), transaction.atomic():
        Attempt.objects.create(job_id=result.id, number=1, worker_id="w", started_at=now)


def _reads(worker):
    """What a claim by ``worker`` read besides the claim itself: the paused queues, the
    queues with keyed jobs."""
    with CaptureQueriesContext(connection) as captured:
        worker.claimer.claim(1)
    sql = [query["sql"] for query in captured]
    paused = {"paused" for q in sql if "asyncjobs_queuestate" in q}
    return paused | {"keyed" for q in sql if "keyed(queue)" in q and "plain(queue)" not in q}


def test_the_claim_rereads_paused_and_keyed_queues_when_announced_or_due(runner):
    """Between re-reads a claim asks for nothing else; an announcement (counted by the
    listener on PostgreSQL) makes the next claim re-read. Where changes are announced, the
    idle worker's sleep ends when a re-read is due, so that a wake-up by a notification goes
    straight to the claim."""
    with freeze_time(timezone.now()) as frozen:
        worker = runner(poll_interval=timedelta(seconds=30))
        assert _reads(worker) == {"paused", "keyed"}  # the first look
        assert _reads(worker) == set()
        worker.claimer.announced({db.NOTIFY_KEYED})
        assert _reads(worker) == {"keyed"}
        worker.claimer.announced({db.NOTIFY_QUEUE})
        assert _reads(worker) == {"paused"}
        frozen.tick(timedelta(seconds=31))
        assert _reads(worker) == {"paused", "keyed"}
        frozen.tick(timedelta(seconds=20))
        # The claimer wants its next look when the re-reads are due (10 s on), where changes
        # are announced; elsewhere the poll interval alone paces the idle worker.
        announces = worker.strategy.announces
        assert worker.claimer.next_look() == pytest.approx(10 if announces else float("inf"))


def test_the_poll_interval_defaults_by_database_unless_the_project_sets_it(settings, runner):
    """MariaDB/MySQL announce nothing: workers there look every 0.2 s unless POLL_INTERVAL is
    set; elsewhere the setting's default, 1 s. An explicit interval always wins."""
    settings.ASYNCJOBS = {k: v for k, v in settings.ASYNCJOBS.items() if k != "POLL_INTERVAL"}
    assert runner().poll_interval == (0.2 if connection.vendor == "mysql" else 1.0)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "POLL_INTERVAL": 3}
    assert runner().poll_interval == 3.0
    assert runner(poll_interval=timedelta(seconds=0.5)).poll_interval == 0.5


def test_a_signal_stops_the_worker_whatever_lock_the_main_thread_holds(runner):
    """The handler runs in the main thread between two bytecodes, possibly while that thread
    holds the lock of one of the loop's own Events (it sleeps and wakes on them all the
    time). It used to set those Events itself and then waited forever on its own thread's
    lock: an idle worker hung on SIGTERM (seen once in CI). The window is a few bytecodes
    wide, so this test opens it on purpose, through the runner's internals."""
    worker = runner()
    before = signal.getsignal(signal.SIGTERM)
    worker.signals.install()
    try:
        with worker._wake._cond, worker._stopping._cond:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in this thread
            time.sleep(0)
        assert worker._stopping.wait(10), "SIGTERM did not stop the worker"
        assert worker._wake.is_set()
    finally:
        worker.signals.restore()
    assert signal.getsignal(signal.SIGTERM) == before
