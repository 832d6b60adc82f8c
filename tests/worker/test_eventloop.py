"""``async def`` tasks on the worker's one event loop: many at once, with the timeouts and
cancellation of synchronous tasks."""

import asyncio
import signal
import threading

import pytest

from asyncjobs import cancel_job
from asyncjobs.exceptions import JobTimeoutError
from asyncjobs.models import AttemptOutcome, Job, JobStatus
from asyncjobs.worker.eventloop import EventLoop
from asyncjobs.worker.watchdog import _raise_in_thread
from tests import tasks
from tests.conftest import wait_until
from tests.models import Execution


def test_one_loop_runs_every_coroutine_and_returns_or_raises():
    loop = EventLoop()

    async def where():
        await asyncio.sleep(0)
        return threading.get_ident()

    async def broken():
        raise KeyError("inside")

    try:
        first, second = loop.run(where()), loop.run(where())
        assert first == second != threading.get_ident()
        with pytest.raises(KeyError, match="inside"):
            loop.run(broken())
    finally:
        loop.stop()


def test_a_task_raising_system_exit_fails_alone_and_the_loop_goes_on():
    loop = EventLoop()

    async def leave():
        raise SystemExit(3)

    async def answer():
        return 42

    try:
        with pytest.raises(SystemExit):
            loop.run(leave())
        assert loop.run(answer()) == 42
    finally:
        loop.stop()


def test_interrupting_the_waiting_thread_cancels_the_coroutine():
    """What the watchdog does to a slot past its job's deadline: the coroutine is cancelled."""
    loop = EventLoop()
    started, cancelled, raised = threading.Event(), threading.Event(), []

    async def forever():
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def slot():
        try:
            loop.run(forever())
        except JobTimeoutError as exc:
            raised.append(exc)

    thread = threading.Thread(target=slot)
    thread.start()
    try:
        assert started.wait(10)
        _raise_in_thread(thread, JobTimeoutError)
        thread.join(10)
        assert raised
        assert cancelled.wait(10)
    finally:
        loop.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_async_tasks_run_together_on_the_workers_one_loop(worker_process):
    results = [tasks.async_together.enqueue("together", 8) for _ in range(8)]
    worker = worker_process("--concurrency", "8")
    wait_until(
        lambda: Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 8,
        timeout=60,
        message=f"jobs done:\n{worker.output()}",
    )
    values = [Job.objects.get(pk=r.id).return_value for r in results]
    assert all(v["seen"] == 8 for v in values), values
    assert len({v["loop_thread"] for v in values}) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_async_timeout_and_cancel_on_the_shared_loop(worker_process):
    timing_out = tasks.async_past_timeout.enqueue("shared-loop-timeout")
    cancelled = tasks.async_cancellable.enqueue("shared-loop-cancel")
    worker = worker_process("--concurrency", "4", heartbeat=0.5)
    wait_until(
        lambda: Execution.objects.filter(label="shared-loop-cancel").exists(), message="running"
    )
    cancel_job(cancelled.id)
    wait_until(
        lambda: Job.objects.get(pk=cancelled.id).status == JobStatus.CANCELLED,
        timeout=30,
        message=f"cancelled:\n{worker.output()}",
    )
    wait_until(
        lambda: Job.objects.get(pk=timing_out.id).status == JobStatus.FAILED,
        timeout=30,
        message=f"timed out twice:\n{worker.output()}",
    )
    job = Job.objects.get(pk=timing_out.id)
    assert [a.outcome for a in job.attempt_set.order_by("number")] == [
        AttemptOutcome.TIMED_OUT,
        AttemptOutcome.TIMED_OUT,
    ]
    # The loop still serves async tasks after both.
    after = tasks.async_add.enqueue(2, 3)
    wait_until(
        lambda: Job.objects.get(pk=after.id).status == JobStatus.SUCCEEDED,
        message=f"async job after:\n{worker.output()}",
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
