"""The watchdog gives up on attempts past their timeout: it records them, interrupts their
threads and gives their slots new ones."""

import logging
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from asyncjobs import services
from asyncjobs.models import AttemptOutcome, Job, JobStatus
from asyncjobs.worker.watchdog import Watchdog
from tests import tasks
from tests.conftest import one_slot, wait_until
from tests.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def claimed(result):
    job = services.claim_job(
        result.id, worker_id="w", now=timezone.now(), lease=timedelta(seconds=60)
    )
    assert job is not None
    return job


def locked(execute, sql, params, many, context):
    """An ``execute_wrapper`` for a database whose file another process holds locked."""
    if sql.lstrip().upper().startswith("UPDATE"):
        raise OperationalError("database is locked")
    return execute(sql, params, many, context)


def test_a_timeout_it_cannot_record_still_frees_the_slot(backend, caplog):
    """SQLite, --concurrency 1, another process holding the write lock when a job timed
    out: the write raised, the stuck thread was neither interrupted nor replaced, and the
    worker never ran another job. Now the slot thread is replaced all the same, the failed
    write is logged, and the interrupted thread records its own timeout."""
    slots = one_slot(backend)
    watchdog = Watchdog(slots, max_memory=None)
    slow = tasks.busy_past_timeout.enqueue("watchdog-locked")
    slots.dispatch([claimed(slow)])
    slots.start()
    try:
        wait_until(
            lambda: Execution.objects.filter(label="watchdog-locked").exists(), message="running"
        )
        (execution,) = slots.inflight.values()
        time.sleep(max(execution.deadline - time.monotonic(), 0) + 0.05)
        with caplog.at_level(logging.ERROR), connection.execute_wrapper(locked):
            watchdog.check_timeouts()
        assert "its failure could not be recorded" in caplog.text
        assert not slots.inflight
        execution.thread.join(10)
        assert not execution.thread.is_alive(), "the stuck thread was not interrupted"
        job = Job.objects.get(pk=slow.id)
        assert job.status == JobStatus.QUEUED
        assert job.attempt_set.get().outcome == AttemptOutcome.TIMED_OUT
        after = tasks.add.enqueue(1, 1)
        slots.dispatch([claimed(after)])
        wait_until(
            lambda: Job.objects.get(pk=after.id).status == JobStatus.SUCCEEDED,
            timeout=10,
            message="the replacement slot thread to run the next job",
        )
    finally:
        slots.stop()
