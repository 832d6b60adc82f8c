"""The last two jobs of a batch ending at the same moment on two connections: the second
waits for the first on the batch row's lock, then sees its count, and only it fires the
callbacks (PostgreSQL, MariaDB/MySQL: SQLite has one writer at a time)."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from asyncjobs import batch, db, services
from asyncjobs.models import BatchState, Job
from tests import batch_tasks as t
from tests.conftest import start_in_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]


def test_two_last_jobs_ending_together_fire_the_callbacks_once():
    with batch(on_success=t.finished, on_complete=t.completed) as b:
        b.enqueue_many([(t.piece, [1], {}), (t.piece, [2], {})])
    now = timezone.now()
    lease = timedelta(seconds=60)
    strategy = db.for_alias("default")
    (first,) = strategy.claim(queues=None, limit=1, worker_id="w1", now=now, lease=lease)
    (second,) = strategy.claim(queues=None, limit=1, worker_id="w2", now=now, lease=lease)
    counted, release = threading.Event(), threading.Event()

    def end_first():
        with transaction.atomic():
            services.record_successes(
                [services.Success(first, 1, now)], worker_id="w1", using="default"
            )
            counted.set()  # the batch row is locked until this transaction commits
            assert release.wait(30)

    def end_second():
        return services.record_successes(
            [services.Success(second, 2, now)], worker_id="w2", using="default"
        )

    first_done = start_in_thread(end_first)
    assert counted.wait(30)
    second_done = start_in_thread(end_second)
    # The second is held on the batch row's lock while the first is not committed: nothing
    # is finished, nothing fired.
    assert b.refresh().finished_at is None
    assert not Job.objects.filter(task_path__startswith="tests.batch_tasks.f").exists()
    release.set()
    first_done()
    assert second.pk in second_done()
    row = b.refresh()
    assert (row.state, row.pending, row.succeeded) == (BatchState.SUCCEEDED, 0, 2)
    callbacks = sorted(
        Job.objects.filter(
            task_path__in=["tests.batch_tasks.finished", "tests.batch_tasks.completed"]
        ).values_list("task_path", flat=True)
    )
    assert callbacks == ["tests.batch_tasks.completed", "tests.batch_tasks.finished"]
