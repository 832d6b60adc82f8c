"""Cancelling the rest of a batch (``services.cancel_batch``): every unfinished job cancelled or
asked to stop through the one cancel transition, a chunk per transaction, in the request for
a small batch and by a job for a big one; counters, dependents, webhooks and the batch's
finish as for single cancels; safe twice and beside workers ending the same jobs."""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from asyncjobs import batch, db, services
from asyncjobs.exceptions import BatchNotFoundError
from asyncjobs.models import BatchState, Job, JobStatus
from asyncjobs.services import bulk
from asyncjobs.testing import work_off
from tests import batch_tasks as t
from tests.conftest import start_in_thread

LATER = timedelta(hours=1)


def _later():
    """``piece``, scheduled an hour ahead: it stays unfinished until cancelled."""
    return t.piece.using(run_after=timezone.now() + LATER)


def _callbacks(path="tests.batch_tasks.completed"):
    return Job.objects.filter(task_path=path).count()


@pytest.mark.django_db
def test_a_small_batch_is_cancelled_in_the_call_like_single_cancels():
    with batch(on_complete=t.completed, on_failure=t.finished) as b:
        b.enqueue_many([(_later(), [n], {}) for n in range(5)])
        hooked = b.enqueue(_later().using(webhook_url="http://127.0.0.1:9/hook"), 9)
    parent = Job.objects.filter(batch_id=b.id, webhook_url="").first()
    # A job outside the batch that depends on one of its jobs: cancelled with its parent.
    outside = t.piece.using(depends_on=[parent.pk]).enqueue(1)
    done = services.cancel_batch(b.id)
    assert (done.cancelled, done.asked, done.job_id) == (6, 0, None)
    row = b.refresh()
    assert (row.state, row.pending, row.cancelled) == (BatchState.FAILED, 0, 6)
    assert Job.objects.get(pk=outside.id).status == JobStatus.CANCELLED
    assert (
        Job.objects.get(pk=outside.id).last_error_message == f"dependency {parent.pk} was cancelled"
    )
    webhook = Job.objects.get(task_path=services.WEBHOOK_TASK)
    assert webhook.kwargs["job_id"] == str(hooked.id)
    assert (_callbacks(), _callbacks("tests.batch_tasks.finished")) == (1, 1)
    # Twice: nothing left to do, nothing fires again.
    again = services.cancel_batch(b.id)
    assert (again.cancelled, again.asked, again.job_id) == (0, 0, None)
    assert _callbacks() == 1


@pytest.mark.django_db
def test_running_jobs_are_asked_and_the_batch_finishes_when_they_end():
    with batch(on_complete=t.completed) as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(3)])
    now = timezone.now()
    (running,) = db.for_alias("default").claim(
        queues=None, limit=1, worker_id="w1", now=now, lease=timedelta(seconds=60)
    )
    done = services.cancel_batch(b.id, now=now)
    assert (done.cancelled, done.asked) == (2, 1)
    assert Job.objects.get(pk=running.pk).cancel_requested_at == now
    assert (b.refresh().pending, _callbacks()) == (1, 0)
    assert services.cancel_batch(b.id).asked == 0  # asked once is enough
    services.record_successes([services.Success(running, 1, now)], worker_id="w1", using="default")
    row = b.refresh()
    assert (row.state, row.succeeded, row.cancelled) == (BatchState.FAILED, 1, 2)
    assert _callbacks() == 1


@pytest.mark.django_db
def test_a_big_batch_is_cancelled_by_a_job_a_chunk_at_a_time(monkeypatch):
    monkeypatch.setattr(bulk, "CANCEL_CHUNK", 3)
    with batch(on_complete=t.completed) as b:
        b.enqueue_many([(_later(), [n], {}) for n in range(20)])
    done = services.cancel_batch(b.id, inline_limit=4)
    assert done.cancelled == 4 and done.job_id is not None
    canceller = Job.objects.get(pk=done.job_id)
    assert (canceller.task_path, canceller.priority) == (services.CANCEL_BATCH_TASK, 100)
    assert services.batch_cancel_job(b.id).pk == done.job_id
    # Each chunk commits its counts before the next one starts.
    seen = []
    progress = services.cancel_batch_jobs(
        b.id, now=None, limit=7, between=lambda: seen.append(b.refresh().cancelled)
    )
    assert seen == [4, 7, 10] and progress[0].cancelled == 7 and progress[1] is True
    work_off()
    assert Job.objects.get(pk=done.job_id).return_value == {"cancelled": 9, "asked": 0}
    row = b.refresh()
    assert (row.state, row.pending, row.cancelled) == (BatchState.FAILED, 0, 20)
    assert _callbacks() == 1
    assert services.batch_cancel_job(b.id) is None


@pytest.mark.django_db
def test_cancel_batch_needs_cancel_job_and_a_batch():
    with batch() as b:
        b.enqueue(_later(), 1)
    reader = User.objects.create_user("reader")
    reader.user_permissions.add(Permission.objects.get(codename="view_job"))
    for user in (AnonymousUser(), User.objects.get(pk=reader.pk)):
        with pytest.raises(PermissionDenied):
            services.cancel_batch(b.id, user=user)
    assert b.refresh().pending == 1
    canceller = User.objects.create_user("canceller")
    canceller.user_permissions.add(Permission.objects.get(codename="cancel_job"))
    assert services.cancel_batch(b.id, user=User.objects.get(pk=canceller.pk)).cancelled == 1
    for unknown in ("nope", "29f97238-b6bb-462d-aa0f-00182b9c3ffb"):
        with pytest.raises(BatchNotFoundError):
            services.cancel_batch(unknown)


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_two_cancels_and_a_worker_at_once_count_every_job_once(monkeypatch):
    """Two "cancel the rest" of one batch at once, a chunk of 5 at a time, while a worker
    records the success of the jobs it holds: every job is counted once, the batch finishes
    once (PostgreSQL, MariaDB/MySQL: SQLite has one writer)."""
    monkeypatch.setattr(bulk, "CANCEL_CHUNK", 5)
    with batch(on_complete=t.completed) as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(60)])
    now = timezone.now()
    held = db.for_alias("default").claim(
        queues=None, limit=10, worker_id="w1", now=now, lease=timedelta(seconds=60)
    )
    go = threading.Event()

    def cancel():
        assert go.wait(30)
        return services.cancel_batch_jobs(b.id, now=timezone.now())[0]

    def finish():
        assert go.wait(30)
        for job in held:
            services.record_successes(
                [services.Success(job, 1, timezone.now())], worker_id="w1", using="default"
            )

    waits = [start_in_thread(cancel), start_in_thread(cancel), start_in_thread(finish)]
    go.set()
    first, second, _ = (wait() for wait in waits)
    assert first.cancelled + second.cancelled == 50
    row = b.refresh()
    assert (row.state, row.pending, row.succeeded, row.cancelled) == (
        BatchState.FAILED,
        0,
        10,
        50,
    )
    assert _callbacks() == 1
