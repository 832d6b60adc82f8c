"""Batches (asyncjobs.batches, services/batches.py): the counters each transition of a member
job keeps, the seal, the callbacks fired once, reopening on retry, child jobs, pruning."""

from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from asyncjobs import (
    BatchClosedError,
    batch,
    cancel_job,
    db,
    enqueue_many,
    get_batch,
    retry_job,
    services,
)
from asyncjobs.exceptions import BatchNotFoundError, JobCancelled
from asyncjobs.models import Attempt, AttemptOutcome, Batch, BatchState, Job, JobStatus
from asyncjobs.testing import work_off
from tests import batch_tasks as t
from tests import tasks

pytestmark = pytest.mark.django_db

CALLBACK = "tests.batch_tasks.finished"


def callbacks():
    """The callback jobs enqueued so far, as (the callback's batch, its summary's state)."""
    return sorted(
        (job.args[0], job.args[1]["state"])
        for job in Job.objects.filter(task_path=CALLBACK).order_by("enqueued_at")
    )


def counts(b):
    row = b.refresh()
    return {
        "total": row.total,
        "pending": row.pending,
        "succeeded": row.succeeded,
        "failed": row.failed,
        "cancelled": row.cancelled,
    }


def batch_updates(queries):
    """The statements of ``queries`` that update batch rows, other than a completion's own."""
    connection = connections["default"]
    table = connection.ops.quote_name(Batch._meta.db_table)
    attempts = connection.ops.quote_name(Attempt._meta.db_table)
    return [q["sql"] for q in queries if f"UPDATE {table}" in q["sql"] and attempts not in q["sql"]]


def everything(**kwargs):
    return batch(on_success=t.finished, on_complete=t.finished, on_failure=t.finished, **kwargs)


def test_enqueue_counts_the_jobs_and_seals_in_the_same_transaction():
    with everything(description="import") as b:
        first = b.enqueue(t.piece, 1)
        rest = b.enqueue_many([(t.piece, [n], {}) for n in range(2, 5)])
        assert b.refresh().state == BatchState.OPEN
    row = b.refresh()
    assert (row.total, row.pending, row.state, row.description) == (4, 4, "running", "import")
    assert row.sealed_at is not None and row.finished_at is None
    ids = {first.id, *(r.id for r in rest)}
    assert {str(pk) for pk in Job.objects.filter(batch_id=b.id).values_list("pk", flat=True)} == ids
    assert Job.objects.filter(batch__isnull=True).count() == 0
    assert callbacks() == []


def test_success_fires_on_success_and_on_complete_once():
    with everything() as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(5)])
    work_off()
    row = b.refresh()
    assert counts(b) == {"total": 5, "pending": 0, "succeeded": 5, "failed": 0, "cancelled": 0}
    assert row.state == BatchState.SUCCEEDED and row.percent == 100.0
    assert row.finished_at and row.success_fired_at and row.complete_fired_at
    assert row.failure_fired_at is None
    # on_success and on_complete, each once, with the batch id and the counts; both ran.
    assert callbacks() == [(b.id, "succeeded"), (b.id, "succeeded")]
    job = Job.objects.filter(task_path=CALLBACK).first()
    assert job.args[1] == {
        "state": "succeeded",
        "description": "",
        "total": 5,
        "succeeded": 5,
        "failed": 0,
        "cancelled": 0,
    }
    assert Job.objects.filter(task_path=CALLBACK, status=JobStatus.SUCCEEDED).count() == 2
    assert Job.objects.filter(task_path=CALLBACK, batch__isnull=False).count() == 0


def test_failure_for_good_fires_on_failure_and_on_complete():
    with everything() as b:
        b.enqueue(t.piece, 1)
        b.enqueue(t.broken, 2)
    work_off()
    row = b.refresh()
    assert counts(b) == {"total": 2, "pending": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    assert row.state == BatchState.FAILED
    assert row.success_fired_at is None and row.failure_fired_at and row.complete_fired_at
    assert callbacks() == [(b.id, "failed"), (b.id, "failed")]


def test_a_job_waiting_for_its_retry_is_still_pending():
    with everything() as b:
        b.enqueue(tasks.fail_always.using(backend="default"), "x")  # 3 attempts, 5 s apart
    work_off()
    assert counts(b)["pending"] == 1
    assert b.refresh().finished_at is None and callbacks() == []


def test_cancel_of_a_waiting_job_counts_it_cancelled():
    with everything() as b:
        keep = b.enqueue(t.piece, 1)
        drop = b.enqueue(t.piece, 2)
    cancel_job(drop.id)
    assert counts(b) == {"total": 2, "pending": 1, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert callbacks() == []
    work_off()
    assert counts(b)["succeeded"] == 1 and Job.objects.get(pk=keep.id).status == "succeeded"
    assert b.refresh().state == BatchState.FAILED
    assert callbacks() == [(b.id, "failed"), (b.id, "failed")]
    cancel_job(drop.id)  # cancelling again changes nothing
    assert counts(b)["cancelled"] == 1


def test_a_running_job_that_ends_cancelled_counts_cancelled():
    with everything() as b:
        result = b.enqueue(t.piece, 1)
    now = timezone.now()
    (job,) = db.for_alias("default").claim(
        queues=None, limit=1, worker_id="w", now=now, lease=timedelta(seconds=30)
    )
    cancel_job(result.id)  # asks the running job to stop
    assert counts(b)["pending"] == 1
    services.record_failure(
        job, worker_id="w", error=JobCancelled("x"), now=now, outcome=AttemptOutcome.CANCELLED
    )
    assert counts(b) == {"total": 1, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert callbacks() == [(b.id, "failed"), (b.id, "failed")]


def test_rescue_that_fails_a_job_finishes_the_batch():
    with everything() as b:
        b.enqueue(t.broken, 1)  # max_attempts=1: a lost attempt fails it for good
    now = timezone.now()
    db.for_alias("default").claim(
        queues=None, limit=1, worker_id="dead", now=now, lease=timedelta(seconds=30)
    )
    assert services.rescue_expired(now=now + timedelta(minutes=1)) == 1
    row = b.refresh()
    assert (row.pending, row.failed, row.state) == (0, 1, BatchState.FAILED)
    assert callbacks() == [(b.id, "failed"), (b.id, "failed")]


def test_rescue_that_requeues_a_job_changes_no_count():
    with everything() as b:
        b.enqueue(t.piece, 1)
    now = timezone.now()
    db.for_alias("default").claim(
        queues=None, limit=1, worker_id="dead", now=now, lease=timedelta(seconds=30)
    )
    services.rescue_expired(now=now + timedelta(minutes=1))
    assert counts(b)["pending"] == 1
    work_off()
    assert counts(b)["succeeded"] == 1 and len(callbacks()) == 2


def test_empty_batch_fires_at_its_seal():
    with everything(description="nothing") as b:
        pass
    row = b.refresh()
    assert (row.total, row.state, row.percent) == (0, BatchState.SUCCEEDED, 100.0)
    assert callbacks() == [(b.id, "succeeded"), (b.id, "succeeded")]


def test_an_exception_in_the_block_leaves_no_batch_and_no_job():
    with pytest.raises(RuntimeError), everything() as b:
        b.enqueue(t.piece, 1)
        raise RuntimeError("changed my mind")
    assert Batch.objects.count() == 0 and Job.objects.count() == 0
    with pytest.raises(BatchNotFoundError):
        b.refresh()
    with pytest.raises(BatchNotFoundError):
        everything().refresh()
    assert Batch.objects.count() == 0


def test_a_rolled_back_outer_transaction_leaves_no_batch():
    with pytest.raises(RuntimeError), transaction.atomic():
        with everything() as b:
            b.enqueue(t.piece, 1)
        assert Batch.objects.count() == 1
        raise RuntimeError("outer rollback")
    assert Batch.objects.count() == 0 and Job.objects.count() == 0


def test_nested_batch_blocks_are_savepoints():
    with transaction.atomic(), everything() as outer:
        outer.enqueue(t.piece, 1)
        with pytest.raises(ValueError), everything() as inner:
            inner.enqueue(t.piece, 2)
            raise ValueError("inner only")
    assert list(Batch.objects.values_list("pk", flat=True)) == [outer.refresh().pk]
    assert counts(outer)["total"] == 1 and Job.objects.count() == 1


def test_bare_batch_stays_open_until_sealed():
    b = everything()
    b.enqueue(t.piece, 1)
    b.enqueue_many([(t.piece, [2], {})])
    work_off()
    row = b.refresh()
    assert (row.state, row.pending, row.succeeded) == (BatchState.OPEN, 0, 2)
    assert callbacks() == []  # an unsealed batch never fires
    assert b.seal() is True
    assert b.refresh().state == BatchState.SUCCEEDED
    assert callbacks() == [(b.id, "succeeded"), (b.id, "succeeded")]
    assert b.seal() is False


def test_child_jobs_join_the_batch_of_the_job_that_adds_them():
    with everything() as b:
        b.enqueue(t.spawn, 3)
    work_off()
    row = b.refresh()
    assert (row.total, row.succeeded, row.pending, row.state) == (4, 4, 0, "succeeded")
    assert Job.objects.filter(batch_id=b.id, task_path="tests.batch_tasks.piece").count() == 3
    assert callbacks() == [(b.id, "succeeded"), (b.id, "succeeded")]


def test_adding_to_a_finished_batch_raises_and_stores_nothing():
    with everything() as b:
        b.enqueue(t.piece, 1)
    work_off()
    before = Job.objects.count()
    with pytest.raises(BatchClosedError):
        get_batch(b.id).enqueue(t.piece, 2)
    with pytest.raises(BatchClosedError):
        get_batch(b.id).enqueue_many([(t.piece, [3], {}), (t.piece, [4], {})])
    assert Job.objects.count() == before and counts(b)["total"] == 1


def test_get_batch_of_an_unknown_id():
    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        with pytest.raises(BatchNotFoundError):
            get_batch(bad)


def test_a_unique_call_answered_by_an_existing_job_does_not_join():
    existing = t.unique_piece.enqueue(7)
    with everything() as b:
        again = b.enqueue(t.unique_piece, 7)
        fresh = b.enqueue(t.unique_piece, 8)
    assert again.id == existing.id and fresh.id != existing.id
    assert counts(b)["total"] == 1
    assert Job.objects.get(pk=existing.id).batch_id is None


def test_tasks_of_another_backend_are_refused(settings):
    settings.TASKS = {
        **settings.TASKS,
        "other": {"BACKEND": "asyncjobs.backend.JobsBackend", "QUEUES": ["default"]},
    }
    with pytest.raises(ValueError, match="backend"):
        everything().enqueue(tasks.add.using(backend="other"), 1, 2)
    with pytest.raises(TypeError):
        batch(on_success=lambda *a: None).enqueue(t.piece, 1)
    assert Batch.objects.count() == 0


def test_retry_reopens_a_finished_batch_and_fires_on_success_once(tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("x")
    with everything() as b:
        b.enqueue(t.piece, 1)
        failing = b.enqueue(t.fail_while, str(flag))
    work_off()
    row = b.refresh()
    assert (row.state, row.failed) == (BatchState.FAILED, 1)
    assert callbacks() == [(b.id, "failed"), (b.id, "failed")]  # on_complete, on_failure

    retry_job(failing.id)
    row = b.refresh()
    assert (row.pending, row.failed, row.finished_at, row.state) == (1, 0, None, "running")
    flag.unlink()
    work_off()
    row = b.refresh()
    assert (row.state, row.succeeded, row.pending) == (BatchState.SUCCEEDED, 2, 0)
    # on_success fires now; on_complete and on_failure fired already and do not again.
    assert callbacks() == [(b.id, "failed"), (b.id, "failed"), (b.id, "succeeded")]
    assert row.success_fired_at and row.finished_at


def test_retry_of_a_cancelled_job_out_of_many_reopens_once_per_batch():
    with everything() as first, everything() as second:
        a = first.enqueue(t.piece, 1)
        b = second.enqueue(t.piece, 2)
        c = second.enqueue(t.piece, 3)
    plain = tasks.add.enqueue(1, 1)
    for result in (a, b, c, plain):
        cancel_job(result.id)
    assert counts(second) == {"total": 2, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 2}
    moved = services.retry_jobs(
        Job.objects.filter(task_path__endswith="piece") | Job.objects.filter(pk=plain.id),
        now=timezone.now(),
    )
    assert moved == 4
    assert counts(first) == {"total": 1, "pending": 1, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert counts(second) == {"total": 2, "pending": 2, "succeeded": 0, "failed": 0, "cancelled": 0}
    work_off()
    assert first.refresh().state == second.refresh().state == BatchState.SUCCEEDED


def test_one_update_per_batch_per_flush():
    with everything() as first, everything() as second:
        first.enqueue_many([(t.piece, [n], {}) for n in range(3)])
        second.enqueue_many([(t.piece, [n], {}) for n in range(3)])
    tasks.add.enqueue(1, 2)
    now = timezone.now()
    claimed = db.for_alias("default").claim(
        queues=None, limit=10, worker_id="w", now=now, lease=timedelta(seconds=30)
    )
    assert len(claimed) == 7
    successes = [services.Success(job, None, now) for job in claimed]
    with CaptureQueriesContext(connections["default"]) as queries:
        recorded = services.record_successes(successes, worker_id="w", using="default")
    assert len(recorded) == 7
    updates = batch_updates(queries)
    # Two batches: each one counter UPDATE, and one for its finish (stamps).
    assert len(updates) == 4
    assert not any("COUNT(" in q["sql"].upper() for q in queries)
    assert first.refresh().state == second.refresh().state == BatchState.SUCCEEDED


def test_a_flush_of_one_batch_counts_in_the_completion_itself():
    with everything() as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(4)])
    tasks.add.enqueue(1, 2)
    now = timezone.now()
    claimed = db.for_alias("default").claim(
        queues=None, limit=3, worker_id="w", now=now, lease=timedelta(seconds=30)
    )
    with CaptureQueriesContext(connections["default"]) as queries:
        services.record_successes(
            [services.Success(job, None, now) for job in claimed], worker_id="w", using="default"
        )
    alone = batch_updates(queries)
    # PostgreSQL: in the completion's statement; elsewhere one UPDATE of the batch.
    assert len(alone) == (0 if connections["default"].vendor == "postgresql" else 1)
    row = b.refresh()
    done = sum(1 for job in claimed if job.batch_id is not None)
    assert (row.pending, row.succeeded, row.finished_at) == (4 - done, done, None)
    work_off()
    assert b.refresh().state == BatchState.SUCCEEDED and len(callbacks()) == 2


def test_plain_jobs_pay_no_batch_statement():
    tasks.add.enqueue(1, 2)
    now = timezone.now()
    claimed = db.for_alias("default").claim(
        queues=None, limit=10, worker_id="w", now=now, lease=timedelta(seconds=30)
    )
    with CaptureQueriesContext(connections["default"]) as queries:
        services.record_successes(
            [services.Success(job, None, now) for job in claimed], worker_id="w", using="default"
        )
    assert not any(Batch._meta.db_table in q["sql"] for q in queries)


def test_pruning_jobs_keeps_the_counts_and_prunes_the_batch_after_them():
    with everything() as b:
        b.enqueue_many([(t.piece, [n], {}) for n in range(3)])
    work_off()
    later = timezone.now() + timedelta(days=2)
    before = counts(b)
    one = Job.objects.filter(batch_id=b.id).first()
    assert services.discard_jobs(Job.objects.filter(pk=one.pk)) == 1
    assert counts(b) == before
    # Its jobs remain: the batch stays.
    assert services.prune_batches(now=later, older_than=timedelta(days=1)) == 0
    services.prune_jobs(now=later, older_than={"succeeded": timedelta(days=1)})
    assert Job.objects.filter(batch_id=b.id).count() == 0
    assert counts(b) == before
    assert services.prune_batches(now=timezone.now(), older_than=timedelta(days=1)) == 0
    assert services.prune_batches(now=later, older_than=timedelta(days=1)) == 1
    assert not Batch.objects.filter(pk=b.id).exists()


def test_running_and_open_batches_are_never_pruned():
    with everything() as running:
        running.enqueue(t.piece, 1)
    open_one = everything()
    assert open_one.id  # created, open (never sealed)
    later = timezone.now() + timedelta(days=30)
    assert services.prune_batches(now=later, older_than=timedelta(days=1)) == 0
    assert Batch.objects.count() == 2


def test_the_batch_records_who_enqueued_it(users):
    alice = users["owner"]
    with services.enqueued_by(alice), everything() as b:
        b.enqueue(t.piece, 1)
    assert b.refresh().enqueued_by_id == alice.pk
    work_off()
    assert set(Job.objects.filter(task_path=CALLBACK).values_list("enqueued_by_id", flat=True)) == {
        alice.pk
    }


def test_callback_options_come_from_the_task_and_using():
    with batch(on_complete=t.finished.using(queue_name="emails", priority=7)) as b:
        pass
    job = Job.objects.get(task_path=CALLBACK)
    assert (job.queue_name, job.priority, job.args[0]) == ("emails", 7, b.id)


def test_enqueue_many_of_the_module_and_the_batch_agree():
    with everything() as b:
        results = b.enqueue_many([(t.piece, [1], {}), (t.piece, [2], {})])
    plain = enqueue_many([(t.piece, [1], {}), (t.piece, [2], {})])
    assert [r.args for r in results] == [r.args for r in plain]
    assert Job.objects.filter(batch_id=b.id).count() == 2
