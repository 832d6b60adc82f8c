"""Retention (pruning) and pausing queues."""

import signal
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from asyncjobs import db, services
from asyncjobs.models import Attempt, Job, JobStatus, QueueState, Worker
from asyncjobs.worker.runner import Runner
from tests import tasks
from tests.conftest import old_finished_jobs, wait_until

pytestmark = pytest.mark.django_db


def finished(status, days_ago, n=1):
    """n jobs that ended ``days_ago`` days ago in ``status``, each with one attempt."""
    now = timezone.now()
    jobs = []
    for _ in range(n):
        result = tasks.add.enqueue(1, 1)
        when = now - timedelta(days=days_ago)
        Job.objects.filter(pk=result.id).update(status=status, finished_at=when, attempts=1)
        Attempt.objects.create(job_id=result.id, number=1, worker_id="w", started_at=when)
        jobs.append(result.id)
    return jobs


def test_prune_removes_only_old_finished_jobs_of_the_given_statuses():
    old_ok = finished(JobStatus.SUCCEEDED, 10, n=7)
    young_ok = finished(JobStatus.SUCCEEDED, 1)
    old_failed = finished(JobStatus.FAILED, 10)
    queued = tasks.add.enqueue(1, 1)
    running_old = finished(JobStatus.RUNNING, 10)  # never finished: must stay
    counts = services.prune_jobs(
        now=timezone.now(),
        older_than={"succeeded": timedelta(days=7), "failed": None},
        batch_size=3,
    )
    assert counts == {"succeeded": 7}
    remaining = set(map(str, Job.objects.values_list("pk", flat=True)))
    assert remaining == {*young_ok, *old_failed, queued.id, *running_old}
    assert not Attempt.objects.filter(job_id__in=old_ok).exists()
    with pytest.raises(ValueError, match="finished"):
        services.prune_jobs(now=timezone.now(), older_than={"queued": timedelta(0)})


def test_prune_batches_are_bounded():
    finished(JobStatus.SUCCEEDED, 10, n=5)
    counts = services.prune_jobs(
        now=timezone.now(), older_than={"succeeded": timedelta(days=1)}, batch_size=2, max_batches=1
    )
    assert counts == {"succeeded": 2}
    assert Job.objects.count() == 3


def test_prune_statuses_take_turns():
    finished(JobStatus.SUCCEEDED, 10, n=4)
    finished(JobStatus.FAILED, 10, n=4)
    counts = services.prune_jobs(
        now=timezone.now(),
        older_than={"succeeded": timedelta(days=1), "failed": timedelta(days=1)},
        batch_size=2,
        max_batches=1,
    )
    assert counts == {"succeeded": 2, "failed": 2}


def test_prune_time_limit_starts_no_batch_after_the_first():
    finished(JobStatus.SUCCEEDED, 10, n=5)
    old = {"succeeded": timedelta(days=1)}
    assert services.prune_jobs(
        now=timezone.now(), older_than=old, batch_size=2, time_limit=timedelta(0)
    ) == {"succeeded": 2}
    assert services.prune_jobs(now=timezone.now(), older_than=old, batch_size=2) == {"succeeded": 3}
    assert not Job.objects.exists() and not Attempt.objects.exists()


def test_maintenance_comes_back_soon_while_old_jobs_are_left(settings):
    """A Pruner's run stops pruning at its time limit and asks to come back soon, and the
    next run goes on; the same when a Rescuer's run rescues as many jobs as it may."""
    from asyncjobs.worker.maintenance import AGAIN_AFTER, Pruner, Rescuer

    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "PRUNE_BATCH_SIZE": 2}
    finished(JobStatus.SUCCEEDED, 10, n=5)
    pruner = Pruner("default", time_limit=timedelta(0))
    runs = [pruner.run(now=timezone.now()) for _ in range(4)]
    assert [(r.counts["jobs_pruned"], r.again_after) for r in runs] == [
        (2, AGAIN_AFTER),
        (2, AGAIN_AFTER),
        (1, AGAIN_AFTER),
        (0, None),
    ]
    assert not Job.objects.exists()

    now = timezone.now()
    for result in (tasks.add.enqueue(1, 1), tasks.add.enqueue(2, 2)):
        Job.objects.filter(pk=result.id).update(
            status=JobStatus.RUNNING, attempts=1, worker_id="gone", lease_expires_at=now
        )
        Attempt.objects.create(job_id=result.id, number=1, worker_id="gone", started_at=now)
    later = now + timedelta(seconds=1)
    rescuer = Rescuer("default", limit=1)
    runs = [rescuer.run(now=later) for _ in range(3)]
    assert [(r.counts["rescued"], r.again_after) for r in runs] == [
        (1, AGAIN_AFTER),
        (1, AGAIN_AFTER),
        (0, None),
    ]


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("delete", ["prune", "discard"])
def test_deleting_finished_jobs_leaves_a_job_being_retried_alone(delete):
    """A job another transaction holds (a retry, here) is skipped, not deleted under it, by
    retention or by the dead letter's "discard all": the retry then finds it, with its
    attempts."""
    from django.db import transaction

    from tests.conftest import in_thread

    busy = finished(JobStatus.FAILED, 40)[0]
    idle = finished(JobStatus.FAILED, 40)[0]
    if delete == "prune":

        def run():
            return services.prune_jobs(
                now=timezone.now(), older_than={"failed": timedelta(days=30)}
            )["failed"]
    else:

        def run():
            return services.discard_jobs(Job.objects.filter(status=JobStatus.FAILED))

    with transaction.atomic():
        Job.objects.select_for_update().get(pk=busy)
        deleted = in_thread(run)
        services.retry_jobs(Job.objects.filter(pk=busy), now=timezone.now())
    assert deleted == 1
    assert not Job.objects.filter(pk=idle).exists()
    assert not Attempt.objects.filter(job_id=idle).exists()
    assert Job.objects.get(pk=busy).status == JobStatus.QUEUED
    assert Attempt.objects.filter(job_id=busy).count() == 1


def test_discard_deletes_only_finished_jobs_with_their_attempts():
    done = finished(JobStatus.FAILED, 1, n=3) + finished(JobStatus.CANCELLED, 1)
    running = finished(JobStatus.RUNNING, 1)
    assert services.discard_jobs(Job.objects.all()) == 4
    assert set(map(str, Job.objects.values_list("pk", flat=True))) == set(running)
    assert not Attempt.objects.filter(job_id__in=done).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_worker_prunes_a_backlog_faster_than_one_batch_per_round(worker_process):
    """5,000 jobs past their retention, pruned 100 at a time: the worker keeps going while
    old jobs are left, so they are gone in about one maintenance interval (6 s). At 5 batches
    a round, as before, 10 rounds would have taken 45 s or more."""
    old_finished_jobs(5000)
    worker = worker_process(
        "--concurrency", "1", maintenance=6, extra_env={"ASYNCJOBS_TEST_PRUNE_BATCH": "100"}
    )
    wait_until(lambda: not Job.objects.exists(), timeout=30, message="the backlog pruned")
    assert not Attempt.objects.exists()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_prunejobs_command_dry_run_and_real():
    finished(JobStatus.SUCCEEDED, 3, n=2)
    finished(JobStatus.CANCELLED, 3)
    finished(JobStatus.FAILED, 3)
    out = StringIO()
    call_command("prunejobs", "--older-than", "2d", "--dry-run", stdout=out)
    assert "Would delete 2 succeeded" in out.getvalue()
    assert Job.objects.count() == 4
    out = StringIO()
    call_command(
        "prunejobs",
        "--older-than",
        "48h",
        "--status",
        "failed",
        "--status",
        "succeeded",
        stdout=out,
    )
    assert "Deleted 1 failed" in out.getvalue() and "Deleted 2 succeeded" in out.getvalue()
    assert list(Job.objects.values_list("status", flat=True)) == ["cancelled"]
    with pytest.raises(CommandError, match="duration"):
        call_command("prunejobs", "--older-than", "soon")


def test_workers_prune_by_the_retention_setting(settings, runner):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "RETENTION": {"succeeded": 86400}}
    finished(JobStatus.SUCCEEDED, 2, n=3)
    keep = finished(JobStatus.FAILED, 400)
    runner().run_once()  # runs maintenance
    assert set(map(str, Job.objects.values_list("pk", flat=True))) == set(keep)


def test_paused_queue_is_not_claimed_but_still_accepts_jobs(runner):
    services.set_queue_paused("emails", True, now=timezone.now())
    email = tasks.send_welcome_email.enqueue(1)
    other = tasks.add.enqueue(1, 1)
    assert runner().drain() == 1
    assert Job.objects.get(pk=email.id).status == JobStatus.QUEUED
    assert Job.objects.get(pk=other.id).status == JobStatus.SUCCEEDED
    services.set_queue_paused("emails", False, now=timezone.now())
    assert runner().drain() == 1
    assert Job.objects.get(pk=email.id).status == JobStatus.SUCCEEDED


def test_a_worker_of_every_queue_claims_around_a_paused_one(runner, settings):
    """A worker without a queue list claims from the queues that hold ready jobs, plain or
    under a per-key limit, less the paused ones."""
    settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": []}}  # every queue
    services.set_queue_paused("emails", True, now=timezone.now())
    email = tasks.send_welcome_email.enqueue(1)
    plain = tasks.add.enqueue(1, 1)
    keyed = tasks.per_account.using(concurrency_key="acct-1", queue_name="reports").enqueue("a")
    later = tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 1)
    assert db.ready_queues("default") == {"default", "emails", "reports"}
    assert db.ready_queues("default", plain=False) == {"reports"}
    assert db.ready_queues("default", keyed=False) == {"default", "emails"}
    assert db.ready_queues("default", plain=False, keyed=False) == set()
    worker = runner()
    assert worker.queues is None and worker.drain() == 2
    statuses = {r.id: Job.objects.get(pk=r.id).status for r in (email, plain, keyed, later)}
    assert statuses == {
        email.id: JobStatus.QUEUED,
        plain.id: JobStatus.SUCCEEDED,
        keyed.id: JobStatus.SUCCEEDED,
        later.id: JobStatus.SCHEDULED,
    }
    assert db.ready_queues("default") == {"emails"}


def test_jobqueue_command():
    out = StringIO()
    call_command("jobqueue", "pause", "emails", stdout=out)
    assert QueueState.objects.get(pk="emails").paused
    tasks.send_welcome_email.enqueue(1)
    out = StringIO()
    call_command("jobqueue", "list", stdout=out)
    assert "emails\tpaused\t1 queued" in out.getvalue()
    call_command("jobqueue", "resume", "emails", stdout=StringIO())
    assert not QueueState.objects.get(pk="emails").paused
    with pytest.raises(CommandError, match="Unknown queue"):
        call_command("jobqueue", "pause", "nope")
    with pytest.raises(CommandError, match="needs a queue"):
        call_command("jobqueue", "pause")


def test_pause_through_the_api(api, users, settings):
    from django.contrib.auth.models import Permission

    operator = users["operator"]
    assert api(operator).post("/jobs/queues/emails/pause/").status_code == 403
    operator.user_permissions.add(Permission.objects.get(codename="pause_queue"))
    operator = type(operator).objects.get(pk=operator.pk)
    response = api(operator).post("/jobs/queues/emails/pause/")
    assert response.status_code == 200 and response.json() == {"queue": "emails", "paused": True}
    stats = api(operator).get("/jobs/stats/").json()
    paused = {q["queue"]: q["paused"] for q in stats["queues"]}
    assert paused == {q: q == "emails" for q in settings.TASKS["default"]["QUEUES"]}
    assert api(operator).post("/jobs/queues/emails/resume/").json()["paused"] is False
    assert api(operator).post("/jobs/queues/nope/pause/").status_code == 400


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_running_worker_honours_pause_within_a_poll_interval(worker_process):
    worker = worker_process("--concurrency", "2", poll=0.3)
    wait_until(lambda: Worker.objects.exists(), message="worker up")
    services.set_queue_paused("default", True, now=timezone.now())
    wait_until(
        lambda: "paused queues now default" in worker.output(),
        timeout=5,
        message="the worker to see the pause",
    )
    held = tasks.add.enqueue(1, 1)
    # The measurement: a paused queue's job stays queued through three poll intervals.
    time.sleep(1.0)
    assert Job.objects.get(pk=held.id).status == JobStatus.QUEUED
    services.set_queue_paused("default", False, now=timezone.now())
    wait_until(lambda: Job.objects.get(pk=held.id).status == JobStatus.SUCCEEDED, message="resumed")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_runner_with_every_queue_paused_claims_nothing(runner):
    from asyncjobs.tasks_api import task_backends

    for name in task_backends["default"].queues:
        services.set_queue_paused(name, True, now=timezone.now())
    tasks.add.enqueue(1, 1)
    assert runner().run_once() == 0
    assert Runner(concurrency=1).claimer.active_queues() == []
