"""A batch's counts when its row is busy (services/batches.py, ``BatchTally``): two
connections ending a batch's last jobs at once, the Rescuer finishing a batch whose last
count was left as a tally, and what readers see meanwhile. The callbacks fire once in each
case."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from asyncjobs import batch, db, services
from asyncjobs.models import Batch, BatchState, BatchTally, Job
from asyncjobs.worker.maintenance import Rescuer
from tests import batch_tasks as t
from tests.conftest import start_in_thread, wait_until, waiting_for_a_lock

CALLBACK = "tests.batch_tasks.finished"


def fired():
    """The callbacks enqueued so far, as the summaries' states."""
    return sorted(job.args[1]["state"] for job in Job.objects.filter(task_path=CALLBACK))


def sealed_batch(size):
    with batch(on_success=t.finished, on_complete=t.finished, on_failure=t.finished) as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(size)])
    return b


def claim(worker, limit=1):
    return db.for_alias("default").claim(
        queues=None, limit=limit, worker_id=worker, now=timezone.now(), lease=timedelta(minutes=1)
    )


def record(jobs, worker):
    now = timezone.now()
    return services.record_successes(
        [services.Success(job, None, now) for job in jobs], worker_id=worker, using="default"
    )


def commit_later(jobs, worker, go):
    """Record ``jobs``' successes on another connection, and commit once ``go`` is set."""
    recorded = threading.Event()

    def run():
        with transaction.atomic():
            done = record(jobs, worker)
            recorded.set()
            assert go.wait(20)
        return done

    outcome = start_in_thread(run)
    wait_until(recorded.is_set, message="the first flush recorded")
    return outcome


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_the_last_two_jobs_ending_at_once_on_two_connections_fire_the_callbacks_once():
    b = sealed_batch(2)
    first, second = claim("a"), claim("b")
    go = threading.Event()
    # The first flush holds the batch row (its count is on it) and has not committed.
    first_done = commit_later(first, "a", go)
    # The second ends the last job meanwhile: its snapshot shows one job left (the first's,
    # not committed), near the end, so it waits for the row instead of leaving a tally...
    second_done = start_in_thread(lambda: record(second, "b"))
    wait_until(waiting_for_a_lock, interval=0.2, message="the second flush waits for the batch row")
    assert fired() == []
    go.set()
    assert len(first_done()) == len(second_done()) == 1
    # ... and, once the first committed, sees its count: it finishes the batch, once.
    row = b.refresh()
    assert (row.pending, row.succeeded, row.state) == (0, 2, BatchState.SUCCEEDED)
    assert row.finished_at is not None
    assert fired() == ["succeeded", "succeeded"]  # on_complete and on_success
    assert not BatchTally.objects.exists()
    assert services.finish_stranded(now=timezone.now()) == 0
    assert fired() == ["succeeded", "succeeded"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_count_left_as_a_tally_by_a_stale_view_is_finished_by_the_rescuer(monkeypatch):
    # A flush that saw the batch's end far away (as one that took longer to commit than the
    # last jobs took to run would) does not wait for the row: its count is left as a tally.
    monkeypatch.setattr(services.batches, "LAST_JOBS", -1)
    b = sealed_batch(2)
    first, second = claim("a"), claim("b")
    go = threading.Event()
    first_done = commit_later(first, "a", go)
    assert len(record(second, "b")) == 1  # committed at once, into a tally
    go.set()
    assert len(first_done()) == 1
    row = Batch.objects.get(pk=b.id)
    assert (row.pending, row.succeeded, row.finished_at) == (1, 1, None)
    assert list(BatchTally.objects.values_list("succeeded", flat=True)) == [1]
    # Readers add the tally in; the batch is not finished before its callbacks fire.
    counted = b.refresh()
    assert (counted.pending, counted.succeeded, counted.percent) == (0, 2, 100.0)
    assert counted.state == BatchState.RUNNING and fired() == []
    # The Rescuer's round adds the tally to the row and finishes the batch, once.
    rescuer = Rescuer("default")
    assert rescuer.run(now=timezone.now()).counts["batches_finished"] == 1
    row = Batch.objects.get(pk=b.id)
    assert (row.pending, row.succeeded, row.state) == (0, 2, BatchState.SUCCEEDED)
    assert fired() == ["succeeded", "succeeded"]
    assert not BatchTally.objects.exists()
    assert rescuer.run(now=timezone.now()).counts["batches_finished"] == 0
    assert fired() == ["succeeded", "succeeded"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_flushes_leave_tallies_while_the_row_is_held_and_the_next_holder_adds_them():
    b = sealed_batch(2_000)
    holder = claim("a")
    go = threading.Event()
    held = commit_later(holder, "a", go)
    # Far from the end: the others do not wait for the row.
    for worker in ("b", "c", "d"):
        assert len(record(claim(worker, limit=10), worker)) == 10
    assert BatchTally.objects.filter(batch_id=b.id).count() == 3
    go.set()
    assert len(held()) == 1
    assert Batch.objects.get(pk=b.id).succeeded == 1
    counted = b.refresh()
    assert (counted.pending, counted.succeeded) == (2_000 - 31, 31)
    # The Rescuer adds the tallies of a running batch without finishing it.
    assert services.finish_stranded(now=timezone.now()) == 0
    assert not BatchTally.objects.exists()
    row = Batch.objects.get(pk=b.id)
    assert (row.pending, row.succeeded, row.finished_at) == (2_000 - 31, 31, None)
    # The next flush holds the row (its count on it).
    assert len(record(claim("e", limit=5), "e")) == 5
    assert Batch.objects.get(pk=b.id).succeeded == 36
    assert not BatchTally.objects.exists()


@pytest.mark.django_db
def test_readers_add_the_tallies_in():
    b = sealed_batch(4)
    BatchTally.objects.create(batch_id=b.id, succeeded=2, failed=1)
    BatchTally.objects.create(batch_id=b.id, cancelled=1)
    row = b.refresh()
    assert (row.total, row.pending, row.succeeded, row.failed, row.cancelled) == (4, 0, 2, 1, 1)
    assert row.percent == 100.0
    listed = {str(found.pk): found for found in Batch.objects.counted()}
    assert listed[b.id].pending == 0
    assert Batch.objects.get(pk=b.id).pending == 4  # the row itself


@pytest.mark.postgres
@pytest.mark.django_db
def test_counting_ends_adds_the_tallies_to_the_row():
    b = sealed_batch(4)
    BatchTally.objects.create(batch_id=b.id, succeeded=2, failed=1)
    BatchTally.objects.create(batch_id=b.id, cancelled=1)
    # Any holder of the row's lock adds them to the row and deletes them.
    with transaction.atomic():
        count = db.count_batch_ends("default", b.id)
    assert (count.pending, count.sealed, count.finished) == (0, True, False)
    assert not BatchTally.objects.exists()
    row = Batch.objects.get(pk=b.id)
    assert (row.pending, row.succeeded, row.failed, row.cancelled) == (0, 2, 1, 1)
