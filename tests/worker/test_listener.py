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


def test_the_main_loop_is_woken_only_when_it_must_go_on(runner):
    """Awake (between rounds) the main loop is not woken: the time the listener's round wants
    it by bounds its next sleep. Asleep, it is woken when the listener's round claimed all it
    could take (more may wait)."""
    tasks.add.enqueue(1, 2)
    awake = runner(concurrency=2, prefetch=0, poll_interval=POLL)
    awake._sleep_until = 0.0  # between rounds
    before = time.monotonic()
    awake._claim_announced()
    assert not awake._wake.is_set()
    # (The claimed job's round wants the next look in a poll interval at the latest.)
    assert before < awake._wanted_at <= time.monotonic() + POLL.total_seconds()

    tasks.add.enqueue(3, 4)
    full = runner(concurrency=1, prefetch=0, poll_interval=POLL)
    asleep(full)
    full._claim_announced()  # one job for its one slot: there may be more
    assert full._wake.is_set()

    tasks.add.enqueue(5, 6)
    between = runner(concurrency=1, prefetch=0, poll_interval=POLL)
    between._sleep_until = 0.0
    between._claim_announced()
    assert between._wanted_at <= time.monotonic()  # its next sleep is none


def test_a_round_under_way_makes_the_listener_wait_then_claim(runner):
    """While the main loop holds the round lock, the listener waits for it, then claims in a
    round of its own: it does not hand the claim to the main loop (which kept the main loop
    going round, an empty claim for nearly every job, at a steady trickle; issue 29)."""
    result = tasks.add.enqueue(1, 2)
    r = runner(concurrency=2, prefetch=0, poll_interval=POLL)
    asleep(r)
    held, over = threading.Event(), threading.Event()
    seen = []

    def main_round():  # (another thread: the main loop, in a round)
        with r._round_lock:
            held.set()
            over.wait(0.2)
            over.set()

    original = r._round
    r._round = lambda: seen.append(over.is_set()) or original()
    thread = threading.Thread(target=main_round)
    thread.start()
    try:
        assert held.wait(30)
        r._claim_announced()  # on the test's thread, which sees the job
    finally:
        over.set()
        thread.join(30)
    assert seen == [True]  # its round came after the main loop's
    assert r.slots.inflight[result.id].state is ExecutionState.BUFFERED
    assert Job.objects.get(pk=result.id).status == JobStatus.RUNNING
    assert not r._wake.is_set()


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


def test_a_slot_coming_free_after_a_dry_claim_wakes_no_round(runner, settings):
    """A round whose claim found fewer ready jobs than it had room for leaves nothing for a
    slot coming free to claim where every new job is announced (PostgreSQL): the job's end
    wakes no round (at a steady trickle, an empty claim per job; issue 29). Where nothing is
    announced, a claim that took all it had room for, a queue under a concurrency limit (a
    job's end may lift it), and --burst (the last job's end ends the worker) still wake it."""

    def woken_by_a_job_end(r, enqueue=lambda: tasks.add.enqueue(1, 2)):
        enqueue()
        assert r._round() is not None
        execution = r.slots._work.get_nowait()[2]
        with r.slots.lock:  # what a slot thread does before it runs a job
            r.slots._begin(execution)
            r.slots.buffered -= 1
        r._wake.clear()
        r.slots.finish(execution, JobStatus.SUCCEEDED)
        return r._wake.is_set()

    announces = runner(concurrency=2, prefetch=0, poll_interval=POLL).strategy.announces
    assert woken_by_a_job_end(runner(concurrency=2, prefetch=0, poll_interval=POLL)) is (
        not announces
    )
    assert woken_by_a_job_end(runner(concurrency=1, prefetch=0, poll_interval=POLL))
    assert woken_by_a_job_end(runner(concurrency=2, prefetch=0, poll_interval=POLL, burst=True))
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"CONCURRENCY": 5}}}
    limited = runner(concurrency=2, prefetch=0, poll_interval=POLL, queues=["other"])
    assert woken_by_a_job_end(limited, lambda: tasks.add.using(queue_name="other").enqueue(1, 2))
