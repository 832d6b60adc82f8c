"""Batches and dependencies together: a job of a batch cancelled by its dependency's failure
ends in its batch, reopening it with its parent's retry reopens the batch, and a dependent
stored already cancelled into a batch counts as ended at once."""

import pytest

from asyncjobs import batch, services
from asyncjobs.models import BatchState, Job
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def counts(b):
    row = b.refresh()
    return row.pending, row.succeeded, row.failed, row.cancelled, row.state


def test_a_cascade_cancel_ends_the_job_in_its_batch_and_a_retry_reopens_both(runner):
    with batch(description="chain in a batch") as b:
        parent = b.enqueue(tasks.fail_fast)
        child = b.enqueue(tasks.noop.using(depends_on=[parent]))
    runner().drain()
    assert Job.objects.get(pk=child.id).status == "cancelled"
    assert counts(b) == (0, 0, 1, 1, BatchState.FAILED)
    # The parent, fixed, is retried: it and the dependent it cancelled are pending again.
    Job.objects.filter(pk=parent.id).update(task_path="tests.tasks.noop")
    services.retry_job(parent.id)
    assert Job.objects.get(pk=child.id).status == "waiting"
    assert counts(b)[:4] == (2, 0, 0, 0)
    runner().drain()
    assert counts(b) == (0, 2, 0, 0, BatchState.SUCCEEDED)


def test_a_dependent_stored_cancelled_into_a_batch_ends_there_at_once(runner):
    parent = tasks.fail_fast.enqueue()
    runner().drain()
    with batch() as b:
        b.enqueue(tasks.noop.using(depends_on=[parent]))
    assert counts(b) == (0, 0, 0, 1, BatchState.FAILED)
