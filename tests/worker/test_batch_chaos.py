"""Batches with real ``runworker`` processes: callbacks fire exactly once while workers are
SIGKILLed in the middle of a run, and from the rescue path when the last job's worker died.

Every wait is bounded and waits on a condition (``wait_until``)."""

import random
import signal
from collections import Counter

import pytest
from django.db.models import F

from asyncjobs import batch
from asyncjobs.models import Batch, BatchState, Job, JobStatus, Worker
from tests import batch_tasks as t
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TIMINGS = {"lease": 2, "heartbeat": 0.5, "maintenance": 0.5, "poll": 0.1}
CALLBACKS = ("tests.batch_tasks.finished", "tests.batch_tasks.completed")


def callback_jobs():
    """(callback task, batch id) -> how many callback jobs were enqueued."""
    return Counter(
        (job.task_path, job.args[0]) for job in Job.objects.filter(task_path__in=CALLBACKS)
    )


def all_done(batch_ids):
    finished = Batch.objects.filter(pk__in=batch_ids, finished_at__isnull=False).count()
    callbacks_running = Job.objects.filter(task_path__in=CALLBACKS).exclude(
        status__in=[JobStatus.SUCCEEDED]
    )
    return finished == len(batch_ids) and not callbacks_running.exists()


# Six worker start-ups and the rescues of four killed workers: minutes on a loaded machine.
@pytest.mark.timeout(600)
def test_callbacks_fire_exactly_once_with_workers_killed_mid_run(worker_process):
    rng = random.Random(28)
    batch_ids = []
    for index in range(6):
        with batch(
            on_success=t.finished,
            on_failure=t.finished,
            on_complete=t.completed,
            description=f"chaos {index}",
        ) as b:
            b.enqueue_many([(t.slow_piece, [n, 0.15], {}) for n in range(20)])
            if index % 3 == 0:
                b.enqueue(t.broken, index)  # this batch ends failed
        batch_ids.append(b.id)
    total = Job.objects.filter(batch__isnull=False).count()

    workers = [worker_process("--concurrency", "2", **TIMINGS) for _ in range(4)]
    for share in (0.15, 0.35, 0.55, 0.75):
        wait_until(
            lambda share=share: (
                Job.objects.filter(
                    batch__isnull=False, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]
                ).count()
                >= share * total
            ),
            timeout=120,
            message=f"{share:.0%} of the jobs done",
        )
        victim = workers.pop(rng.randrange(len(workers)))
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        workers.append(worker_process("--concurrency", "2", **TIMINGS))
    wait_until(lambda: all_done(batch_ids), timeout=180, message="every batch and callback done")

    fired = callback_jobs()
    for index, batch_id in enumerate(batch_ids):
        row = Batch.objects.get(pk=batch_id)
        statuses = Counter(Job.objects.filter(batch_id=batch_id).values_list("status", flat=True))
        assert row.total == sum(statuses.values())
        assert (row.pending, row.succeeded, row.failed, row.cancelled) == (
            0,
            statuses[JobStatus.SUCCEEDED],
            statuses[JobStatus.FAILED],
            statuses[JobStatus.CANCELLED],
        )
        assert row.state == (BatchState.FAILED if index % 3 == 0 else BatchState.SUCCEEDED)
        # on_complete once, and one of on_success / on_failure once.
        assert fired[("tests.batch_tasks.completed", batch_id)] == 1
        assert fired[("tests.batch_tasks.finished", batch_id)] == 1
        assert row.complete_fired_at is not None
        assert (row.success_fired_at is None) == (index % 3 == 0)
        assert (row.failure_fired_at is None) == (index % 3 != 0)
    assert sum(fired.values()) == 2 * len(batch_ids)
    for worker in workers:
        # A replacement may still be starting: its SIGTERM handler is set before its first
        # heartbeat.
        wait_until(
            lambda w=worker: Worker.objects.filter(
                pid=w.pid, last_heartbeat_at__gt=F("started_at")
            ).exists(),
            message="worker up",
        )
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(30) == 0


@pytest.mark.timeout(300)
def test_callbacks_fire_from_the_rescue_path(worker_process):
    """The last job's worker dies: the rescuer fails the job (no attempt left), and the
    rescue's transaction finishes the batch and enqueues its callbacks."""
    with batch(on_failure=t.finished, on_complete=t.completed) as b:
        job = b.enqueue(t.hold_once, 120)
    doomed = worker_process("--concurrency", "1", **TIMINGS)
    wait_until(
        lambda: Job.objects.get(pk=job.id).status == JobStatus.RUNNING, message="job running"
    )
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    rescuer = worker_process("--concurrency", "1", **TIMINGS)
    wait_until(lambda: all_done([b.id]), timeout=60, message="rescued and called back")
    row = b.refresh()
    assert (row.state, row.failed, row.pending) == (BatchState.FAILED, 1, 0)
    attempt = Job.objects.get(pk=job.id).attempt_set.get()
    assert attempt.outcome == "lost"
    assert callback_jobs() == Counter(
        {("tests.batch_tasks.finished", b.id): 1, ("tests.batch_tasks.completed", b.id): 1}
    )
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait(30) == 0
