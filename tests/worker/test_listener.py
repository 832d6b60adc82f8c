"""The listener thread claims the moment a job is announced (issue 29, pickup latency): a round
of its own, on its own connection, in turn with the main loop's, rather than a wake-up of the
sleeping main thread first. Driven by hand on the test's thread: the round, the lock it takes
turns under, and when it wakes the main loop."""

import threading
import time
from datetime import timedelta

import pytest

from asyncjobs.models import Job, JobStatus
from asyncjobs.worker.slots import ExecutionState
from tests import tasks

pytestmark = pytest.mark.django_db
POLL = timedelta(seconds=10)


def asleep(r, seconds=5.0):
    """Have ``r``'s main loop asleep for ``seconds`` more (as _loop records it)."""
    r._sleep_until = time.monotonic() + seconds


def test_an_announced_job_is_claimed_on_the_listener_thread(runner):
    """The round claims the job and hands it to the slots; the main loop, asleep for longer
    than the round wants it, stays asleep (it would only claim again, for nothing)."""
    result = tasks.add.enqueue(1, 2)
    r = runner(concurrency=2, prefetch=0, poll_interval=POLL)
    asleep(r)  # and its next round is due in 10 s, later than that
    r._claim_announced()
    execution = r.slots.inflight[result.id]
    assert execution.state is ExecutionState.BUFFERED  # handed to the slots
    assert Job.objects.get(pk=result.id).status == JobStatus.RUNNING
    assert not r._wake.is_set()


def test_the_main_loop_is_woken_when_it_is_not_asleep_or_must_go_on(runner):
    """Awake (between rounds) the main loop is woken to go round again; asleep, it is woken
    when the listener's round claimed all it could take (more may wait)."""
    tasks.add.enqueue(1, 2)
    awake = runner(concurrency=2, prefetch=0, poll_interval=POLL)
    awake._sleep_until = 0.0  # between rounds
    awake._claim_announced()
    assert awake._wake.is_set()

    tasks.add.enqueue(3, 4)
    full = runner(concurrency=1, prefetch=0, poll_interval=POLL)
    asleep(full)
    full._claim_announced()  # one job for its one slot: there may be more
    assert full._wake.is_set()


def test_a_round_under_way_makes_the_listener_wake_the_main_loop_instead(runner):
    """While the main loop holds the round lock, the listener does not claim: it wakes the
    main loop, which goes round again once its round is over."""
    result = tasks.add.enqueue(1, 2)
    r = runner(concurrency=1, prefetch=0)
    with r._round_lock:
        r._claim_announced()
    assert r._wake.is_set()
    assert result.id not in r.slots.inflight
    assert Job.objects.get(pk=result.id).status == JobStatus.QUEUED


def test_a_stopping_worker_claims_nothing_on_a_notification(runner):
    result = tasks.add.enqueue(1, 2)
    r = runner(concurrency=1, prefetch=0)
    r.stop()
    r._wake.clear()
    r._claim_announced()
    assert Job.objects.get(pk=result.id).status == JobStatus.QUEUED


def test_a_round_that_ends_the_worker_stops_the_main_loop(runner):
    """``--max-jobs`` reached in the listener's round: the main loop is woken and stops."""
    r = runner(concurrency=1, prefetch=0, max_jobs=0, poll_interval=POLL)
    asleep(r)
    r._claim_announced()
    assert r._stop_round and r._wake.is_set()
    stopped = threading.Event()

    def loop():
        r._loop()
        stopped.set()

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join(30)
    assert stopped.is_set()


def test_a_failing_round_does_not_end_the_listener_thread(runner, monkeypatch, caplog):
    """Whatever a round on the listener thread raises is logged, and the main loop woken (its
    own round meets the failure, or not); the listener thread goes on listening."""
    r = runner(concurrency=1, prefetch=0, poll_interval=POLL)

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(r, "_step", broken)
    asleep(r)
    r._claim_announced()
    assert r._wake.is_set()
    assert "a round on the listener thread failed" in caplog.text
    assert not r._round_lock.locked()
