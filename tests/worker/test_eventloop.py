"""``async def`` tasks on the worker's one event loop: many at once, with the timeouts and
cancellation of synchronous tasks."""

import asyncio
import inspect
import signal
import threading

import pytest

from asyncjobs import cancel_job
from asyncjobs.exceptions import JobTimeoutError
from asyncjobs.models import AttemptOutcome, Job, JobStatus
from asyncjobs.worker.eventloop import EventLoop
from asyncjobs.worker.watchdog import _raise_in_thread
from tests import tasks
from tests.conftest import start_in_thread, wait_until
from tests.models import Execution


async def forever(started, cancelled):
    """A task that waits for ever: sets ``started``, then ``cancelled`` when cancelled."""
    started.set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancelled.set()
        raise


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

    def slot():
        try:
            loop.run(forever(started, cancelled))
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


def test_a_coroutine_the_loop_cannot_make_a_task_of_fails_its_slot():
    """A task factory that raises (a project's, set on the loop): the slot gets the error
    instead of waiting for ever, and the loop goes on."""
    loop = EventLoop()

    async def answer():
        return 42

    def refuse(event_loop, coroutine, **kwargs):
        raise RuntimeError("no task for you")

    try:
        real = loop._started()
        real.call_soon_threadsafe(real.set_task_factory, refuse)
        refused = start_in_thread(lambda: loop.run(answer()))  # (bounded: 30 s)
        with pytest.raises(RuntimeError, match="no task for you"):
            refused()
        real.call_soon_threadsafe(real.set_task_factory, None)
        assert loop.run(answer()) == 42
    finally:
        loop.stop()


class _InterruptedHandOff(EventLoop):
    """An EventLoop whose slot is interrupted inside the hand-off of its coroutine, at a
    point chosen by the test: ``before`` the loop has it, or ``after`` it was queued (once
    ``after`` is set, which the test does when the loop has done what it wants)."""

    def __init__(self, when, after=None):
        super().__init__()
        self.when, self.after = when, after

    def _started(self):
        loop = super()._started()
        test = self

        class Proxy:
            def call_soon_threadsafe(self, *args):
                if test.when == "before":
                    raise JobTimeoutError
                loop.call_soon_threadsafe(*args)
                assert test.after.wait(10)
                raise JobTimeoutError

        return Proxy()


def test_an_interruption_as_the_loop_starts_the_coroutine_cancels_it():
    """The interruption lands in the slot while it still hands the coroutine over, but the
    loop has already started it: the coroutine is cancelled on the loop, not closed under it
    from the slot's thread."""
    started, cancelled = threading.Event(), threading.Event()
    loop = _InterruptedHandOff("after", after=started)

    try:
        with pytest.raises(JobTimeoutError):
            loop.run(forever(started, cancelled))
        assert cancelled.wait(10)
    finally:
        loop.stop()


@pytest.mark.parametrize("when", ["before", "queued"])
def test_an_interruption_before_the_loop_takes_the_coroutine_closes_it_unrun(when):
    """Interrupted before the loop has the coroutine (``before``), or once it is queued but
    the loop has not come to it yet (``queued``, the loop held busy meanwhile): the
    coroutine never runs, and is closed rather than left for a never-awaited warning."""
    ran, busy, release = [], threading.Event(), threading.Event()
    loop = _InterruptedHandOff(when, after=threading.Event())
    if when == "queued":
        loop.after.set()

        def hold():
            busy.set()
            release.wait(10)

        EventLoop._started(loop).call_soon_threadsafe(hold)
        assert busy.wait(10)

    async def job():
        ran.append(True)

    coroutine = job()
    try:
        with pytest.raises(JobTimeoutError):
            loop.run(coroutine)
        release.set()
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
        # The loop is free and has gone past the queued hand-off: the coroutine stayed unrun.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop._loop).result(10)
        assert not ran
    finally:
        release.set()
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
