"""Dependencies between jobs (``depends_on``) and chains: held in ``waiting`` until the jobs
they depend on have ended, released in the transaction that ends the last one, cancelled
(or run, per policy) when one fails for good or is cancelled, reopened when it is retried.
Runs on every database; the lock tests need row locks (PostgreSQL, MariaDB)."""

import json
import signal
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from asyncjobs import chain, services, step
from asyncjobs.exceptions import InvalidTransitionError, JobNotFoundError
from asyncjobs.models import Job, JobDependency, JobStatus
from asyncjobs.services.dependencies import DEPENDENCY_ERROR
from asyncjobs.tasks_api import InvalidTask, TaskResultStatus, task_backends
from tests import tasks
from tests.conftest import start_in_thread, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
LEASE = timedelta(seconds=30)


def status(result):
    return Job.objects.values_list("status", flat=True).get(pk=result.id)


def job(result):
    return Job.objects.get(pk=result.id)


def run_until_idle(runner):
    """Run jobs in this process until none is ready (released dependents included)."""
    return runner().drain()


def test_chain_passes_each_return_value_to_the_next_step(runner):
    first, second, third = chain(
        step(tasks.add, 1, 2), step(tasks.add, 10), step(tasks.add, b=100)
    ).enqueue()
    assert [status(r) for r in (first, second, third)] == ["queued", "waiting", "waiting"]
    assert second.status == TaskResultStatus.READY  # waiting reads as READY
    assert run_until_idle(runner) == 3
    results = [task_backends["default"].get_result(r.id) for r in (first, second, third)]
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 3
    assert [r.return_value for r in results] == [3, 13, 113]
    # The value is part of the call as stored: the result's args show what ran.
    assert results[1].args == [3, 10] and results[2].args == [13]
    assert job(third).pending_dependencies == 0


def test_a_chain_is_stored_all_or_none():
    with pytest.raises(TypeError):
        chain(step(tasks.add, 1, 2), step(tasks.add, object())).enqueue()
    assert not Job.objects.exists() and not JobDependency.objects.exists()


def test_chain_refuses_what_is_not_a_chain():
    with pytest.raises(ValueError, match="at least one"):
        chain()
    with pytest.raises(TypeError, match="needs a task"):
        step(print, 1)
    first = tasks.noop.enqueue()
    with pytest.raises(ValueError, match="only the first step"):
        chain(tasks.noop, tasks.noop.using(depends_on=[first]))


def test_depends_on_waits_for_every_parent(runner):
    a, b = tasks.noop.using(queue_name="default").enqueue(), tasks.add.enqueue(1, 1)
    child = tasks.record.using(depends_on=[a, b.id]).enqueue("child")
    assert status(child) == "waiting" and job(child).pending_dependencies == 2
    assert set(Job.objects.filter(has_dependents=True).values_list("pk", flat=True)) == {
        job(a).pk,
        job(b).pk,
    }
    assert run_until_idle(runner) == 3
    assert status(child) == "succeeded"
    assert set(JobDependency.objects.values_list("outcome", flat=True)) == {"succeeded"}


def test_a_dependent_whose_run_after_is_ahead_is_released_as_scheduled(runner):
    parent = tasks.noop.enqueue()
    later = timezone.now() + timedelta(hours=1)
    child = tasks.noop.using(depends_on=[parent], run_after=later).enqueue()
    assert status(child) == "waiting"
    assert run_until_idle(runner) == 1
    assert status(child) == "scheduled"


def test_depending_on_a_job_that_already_succeeded_is_ready_at_once(runner):
    parent = tasks.add.enqueue(2, 2)
    run_until_idle(runner)
    child = tasks.record.using(depends_on=[parent]).enqueue("after")
    assert status(child) == "queued"
    assert JobDependency.objects.get().outcome == "succeeded"
    # pass_result (chains) gets the stored value when the parent has succeeded already.
    follow = services.enqueue_dependents(
        [
            (
                task_backends["default"].build_job(tasks.add, [1], {}, timezone.now()),
                services.Requirement(parents=(parent.id,), pass_result=True),
            )
        ],
        using="default",
        now=timezone.now(),
    )[0]
    assert follow.status == JobStatus.QUEUED and follow.args == [4, 1]


@pytest.mark.parametrize("parent_status", ["failed", "cancelled"])
def test_depending_on_a_job_that_already_failed_applies_the_policy(parent_status):
    parent = tasks.noop.enqueue()
    Job.objects.filter(pk=parent.id).update(status=parent_status, finished_at=timezone.now())
    cancelled = tasks.noop.using(depends_on=[parent]).enqueue()
    assert cancelled.status == TaskResultStatus.FAILED
    stored = job(cancelled)
    assert stored.status == "cancelled" and stored.last_error_class == DEPENDENCY_ERROR
    verb = "failed" if parent_status == "failed" else "was cancelled"
    assert stored.last_error_message == f"dependency {parent.id} {verb}"
    runs_anyway = tasks.noop.using(depends_on=[parent], on_dependency_failure="run").enqueue()
    assert status(runs_anyway) == "queued"
    # The failed parent may be retried: it looks for its dependents when it ends again.
    assert job(parent).has_dependents is True


def test_unknown_or_malformed_parents_are_refused_and_nothing_is_stored():
    with pytest.raises(JobNotFoundError, match="to depend on"):
        tasks.noop.using(depends_on=[uuid.uuid4()]).enqueue()
    with pytest.raises(JobNotFoundError, match="not the id of a job"):
        tasks.noop.using(depends_on=["not-a-uuid"])
    with pytest.raises(InvalidTask, match="on_dependency_failure"):
        tasks.noop.using(on_dependency_failure="sometimes")
    parent = tasks.noop.enqueue()
    with pytest.raises(JobNotFoundError):
        services.enqueue_dependents(
            [
                (
                    task_backends["default"].build_job(tasks.noop, [], {}, timezone.now()),
                    services.Requirement(parents=(parent.id, uuid.uuid4())),
                )
            ],
            using="default",
            now=timezone.now(),
        )
    assert Job.objects.count() == 1 and not JobDependency.objects.exists()
    assert job(parent).has_dependents is None


def test_enqueue_many_with_dependencies(runner):
    from asyncjobs import enqueue_many

    parent = tasks.add.enqueue(1, 1)
    waiting = tasks.record.using(depends_on=[parent])
    results = enqueue_many([(waiting, ["x"], {}), (tasks.noop, [], {}), (waiting, ["y"], {})])
    assert [status(r) for r in results] == ["waiting", "queued", "waiting"]
    assert run_until_idle(runner) == 4
    assert {status(r) for r in results} == {"succeeded"}


def test_a_parent_failing_for_good_cancels_its_dependents_recursively(runner):
    parent = tasks.fail_fast.enqueue()
    child = tasks.noop.using(depends_on=[parent]).enqueue()
    grandchild = tasks.noop.using(depends_on=[child]).enqueue()
    tolerant = tasks.record.using(depends_on=[parent], on_dependency_failure="run").enqueue("t")
    after_tolerant = tasks.noop.using(depends_on=[tolerant]).enqueue()
    assert run_until_idle(runner) == 3  # the parent, then the tolerant one and its dependent
    assert status(parent) == "failed"
    assert [status(r) for r in (child, grandchild)] == ["cancelled", "cancelled"]
    assert job(child).last_error_message == f"dependency {parent.id} failed"
    assert job(grandchild).last_error_message == f"dependency {child.id} was cancelled"
    assert job(grandchild).last_error_class == DEPENDENCY_ERROR
    assert [status(r) for r in (tolerant, after_tolerant)] == ["succeeded", "succeeded"]


def test_retrying_a_failed_parent_reopens_the_dependents_it_cancelled(runner):
    parent = tasks.fail_fast.enqueue()
    steps = chain(step(tasks.add.using(depends_on=[parent]), 1, 2), step(tasks.add, 2)).enqueue()
    operator_cancelled = tasks.noop.using(depends_on=[parent]).enqueue()
    services.cancel_job(operator_cancelled.id)
    run_until_idle(runner)
    assert [status(r) for r in steps] == ["cancelled", "cancelled"]
    # Fixed: the parent is retried out of the dead letter; what it cancelled waits again,
    # recursively; what an operator cancelled stays cancelled.
    Job.objects.filter(pk=parent.id).update(task_path="tests.tasks.noop")
    services.retry_job(parent.id)
    assert [status(r) for r in steps] == ["waiting", "waiting"]
    assert job(steps[0]).last_error_class == "" and job(steps[0]).finished_at is None
    assert status(operator_cancelled) == "cancelled"
    assert run_until_idle(runner) == 3
    backend = task_backends["default"]
    assert [backend.get_result(r.id).return_value for r in steps] == [3, 5]


def test_cancelling_a_queued_parent_cancels_its_dependents_and_waiting_jobs_cancel():
    parent = tasks.noop.enqueue()
    child = tasks.noop.using(depends_on=[parent]).enqueue()
    other = tasks.noop.using(depends_on=[parent]).enqueue()
    assert services.cancel_job(other.id).status == "cancelled"  # a waiting job cancels
    services.cancel_job(parent.id)
    assert status(child) == "cancelled"
    assert job(child).last_error_message == f"dependency {parent.id} was cancelled"
    assert job(other).last_error_class == ""  # cancelled by the operator, before
    # Retrying the cancelled child alone: it waits for nothing any more, so it is queued.
    services.retry_job(child.id)
    assert status(child) == "queued"


def test_retrying_a_job_cancelled_while_waiting_makes_it_wait_again():
    parent = tasks.noop.enqueue()
    child = tasks.noop.using(depends_on=[parent]).enqueue()
    services.cancel_job(child.id)
    services.retry_job(child.id)
    assert status(child) == "waiting"


def test_run_now_refuses_a_waiting_job_on_every_path(users, api, client):
    """The services and the admin's action (the API has no run-now); the admin's job page
    and the API's job show the dependencies."""
    from django.contrib.auth.models import User

    parent = tasks.noop.enqueue()
    child = tasks.noop.using(depends_on=[parent]).enqueue()
    with pytest.raises(InvalidTransitionError, match="waiting for 1 job"):
        services.run_job_now(child.id)
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    response = client.post(
        "/admin/asyncjobs/job/",
        {"action": "run_now", "_selected_action": [child.id]},
        follow=True,
    )
    assert "Skipped 1 job(s): a waiting job runs only once its dependencies have ended" in (
        response.content.decode()
    )
    assert status(child) == "waiting"
    page = client.get(f"/admin/asyncjobs/job/{child.id}/change/").content.decode()
    assert f"/admin/asyncjobs/job/{parent.id}/change/" in page and "pending" in page
    page = client.get(f"/admin/asyncjobs/job/{parent.id}/change/").content.decode()
    assert f"/admin/asyncjobs/job/{child.id}/change/" in page
    assert api(users["operator"]).get(f"/jobs/{child.id}/").json()["depends_on"] == [parent.id]
    assert api(users["operator"]).get(f"/jobs/{parent.id}/").json()["depends_on"] == []


def test_failure_of_a_running_parent_through_the_worker_path(runner):
    """record_failure (the executor's path), and the rescue of a lost attempt."""
    parent = tasks.fail_always.using(max_attempts=1).enqueue("x")
    child = tasks.noop.using(depends_on=[parent]).enqueue()
    run_until_idle(runner)
    assert status(child) == "cancelled"
    lost = tasks.noop.using(max_attempts=1).enqueue()
    lost_child = tasks.noop.using(depends_on=[lost]).enqueue()
    now = timezone.now()
    assert services.claim_job(lost.id, worker_id="gone", now=now, lease=LEASE) is not None
    services.rescue_expired(now=now + LEASE * 2)
    assert status(lost) == "failed" and status(lost_child) == "cancelled"


@pytest.mark.server
def test_a_parent_succeeding_while_its_dependent_is_enqueued_is_seen_after():
    """The enqueue holds the parent's lock: the completion waits for it, then finds the new
    edge (and has_dependents) and releases the dependent."""
    parent = tasks.add.enqueue(1, 2)
    claimed = services.claim_job(parent.id, worker_id="w", now=timezone.now(), lease=LEASE)
    enqueued, release = threading.Event(), threading.Event()

    def enqueue_and_hold():
        with transaction.atomic():
            result = tasks.noop.using(depends_on=[parent]).enqueue()
            enqueued.set()
            assert release.wait(20)
        return result

    holder = start_in_thread(enqueue_and_hold)
    assert enqueued.wait(20)
    completed = threading.Event()

    def complete():
        done = services.record_success(claimed, worker_id="w", return_value=3, now=timezone.now())
        completed.set()
        return done

    completer = start_in_thread(complete)
    # The completion is blocked on the parent's row lock while the enqueue is open (a fixed
    # wait that is itself the check: nothing may happen meanwhile).
    assert not completed.wait(0.5)
    release.set()
    child = holder()
    assert completer() is True
    assert status(child) == "queued"
    assert JobDependency.objects.get().outcome == "succeeded"


@pytest.mark.server
def test_a_dependent_enqueued_while_its_parent_completes_sees_it_succeeded():
    parent = tasks.add.enqueue(1, 2)
    claimed = services.claim_job(parent.id, worker_id="w", now=timezone.now(), lease=LEASE)
    completing, release = threading.Event(), threading.Event()

    def complete_and_hold():
        with transaction.atomic():
            services.record_success(claimed, worker_id="w", return_value=3, now=timezone.now())
            completing.set()
            assert release.wait(20)

    completer = start_in_thread(complete_and_hold)
    assert completing.wait(20)
    done = threading.Event()

    def enqueue():
        result = tasks.noop.using(depends_on=[parent]).enqueue()
        done.set()
        return result

    enqueuer = start_in_thread(enqueue)
    assert not done.wait(0.5)  # blocked on the parent's lock (the wait is the check)
    release.set()
    completer()
    child = enqueuer()
    assert status(child) == "queued"
    assert JobDependency.objects.get().outcome == "succeeded"
    assert job(parent).has_dependents is None  # a succeeded parent never ends again


@pytest.mark.server
def test_two_parents_ending_at_once_release_their_dependent_once():
    a, b = tasks.add.enqueue(1, 1), tasks.add.enqueue(2, 2)
    child = tasks.noop.using(depends_on=[a, b]).enqueue()
    now = timezone.now()
    claimed = []
    for result in (a, b):
        claimed.append(
            services.claim_job(result.id, worker_id=f"w{result.id}", now=now, lease=LEASE)
        )
    barrier = threading.Barrier(2, timeout=20)

    def complete(one):
        def run():
            barrier.wait()
            return services.record_success(
                one, worker_id=f"w{one.pk}", return_value=0, now=timezone.now()
            )

        return run

    outcomes = [start_in_thread(complete(one)) for one in claimed]
    assert [outcome() for outcome in outcomes] == [True, True]
    assert status(child) == "queued" and job(child).pending_dependencies == 0


@pytest.mark.slow
def test_a_chain_of_three_runs_through_a_worker_process(worker_process):
    results = chain(step(tasks.add, 1, 2), step(tasks.add, 10), step(tasks.add, 100)).enqueue()
    worker = worker_process("--concurrency", "2")
    backend = task_backends["default"]
    wait_until(
        lambda: backend.get_result(results[-1].id).status == TaskResultStatus.SUCCESSFUL,
        timeout=60,
        message="the chain's last step",
    )
    assert [backend.get_result(r.id).return_value for r in results] == [3, 13, 113]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_dependent_cancelled_by_its_parent_sends_its_webhook(http_server, runner):
    parent = tasks.fail_fast.enqueue()
    child = tasks.noop.using(depends_on=[parent], webhook_url=f"{http_server.url}/hook").enqueue()
    runner().drain()
    (request,) = [r for r in http_server.requests if r["path"] == "/hook"]
    notice = json.loads(request["body"])
    assert notice["id"] == child.id and notice["status"] == "cancelled"
    assert notice["error"]["message"] == f"dependency {parent.id} failed"


def test_run_inline_runs_a_chain_in_order(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "RUN_INLINE": True}
    results = chain(step(tasks.add, 1, 2), step(tasks.add, 10), step(tasks.add, 100)).enqueue()
    backend = task_backends["default"]
    assert [backend.get_result(r.id).return_value for r in results] == [3, 13, 113]


def test_waiting_jobs_are_counted_in_stats_and_metrics(users, api):
    parent = tasks.noop.enqueue()
    tasks.noop.using(depends_on=[parent]).enqueue()
    stats = api(users["staff"]).get("/jobs/stats/").json()
    (default,) = [q for q in stats["queues"] if q["queue"] == "default"]
    assert (default["waiting"], default["queued"]) == (1, 1)


def test_a_parent_with_thousands_of_dependents_releases_them_all(runner):
    """More dependents than one statement binds (CHUNK), in one enqueue_many."""
    from asyncjobs import enqueue_many

    parent = tasks.add.enqueue(1, 1)
    waiting = tasks.noop.using(depends_on=[parent])
    results = enqueue_many([(waiting, [], {})] * 2500)
    assert Job.objects.filter(status="waiting").count() == 2500
    now = timezone.now()
    claimed = services.claim_job(parent.id, worker_id="w", now=now, lease=LEASE)
    assert services.record_success(claimed, worker_id="w", return_value=2, now=now)
    assert Job.objects.filter(status="queued").count() == 2500
    assert not JobDependency.objects.filter(resolved_at__isnull=True).exists()
    assert status(results[-1]) == "queued"
