"""Jobs under a rate limit reach their start slots (issue: a per-key rate held at a small
share of its rate). Three causes, each tested without timing: a keyed claim's slots came
from a clock reading taken before the rest of the claim ran, so on a loaded machine they had
passed before a slot thread got the job, which was given back and its key's turn wasted; a
late start within START_TOLERANCE must still start; and with a full prefetch buffer no claim
saw an idle slot thread, so rate-limited jobs waited behind prefetched ones. The clock is
injected; rounds and holds are driven by hand."""

import threading
from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from asyncjobs import enqueue_many, services
from asyncjobs.models import Job, JobStatus, LimitState
from asyncjobs.services import START_HANDOFF, START_TOLERANCE, start_spacing
from asyncjobs.worker.slots import ExecutionState, Slots, TimedExecution
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


def keyed(n, keys=("a",)):
    """``n`` jobs of ``tasks.stamp_per_key`` (5/s per key) for each key."""
    return enqueue_many(
        [
            (tasks.stamp_per_key.using(concurrency_key=key), (key,), {})
            for key in keys
            for _ in range(n)
        ]
    )


class SteppingClock:
    """A clock that moves ``step`` forward on every reading: each query of a claim between
    two readings "takes" that long."""

    def __init__(self, start, step):
        self.now, self.step, self.readings = start, step, []

    def __call__(self):
        self.readings.append(self.now)
        self.now += self.step
        return self.readings[-1]


def test_a_keyed_claim_takes_its_slots_from_the_clock_after_the_claim():
    """The slot is START_HANDOFF after the clock's last reading, taken once the jobs are
    started: the claim's own time (40 ms a reading here) no longer eats into the hand-off."""
    keyed(1, keys=("a", "b"))
    clock = SteppingClock(timezone.now(), timedelta(milliseconds=40))
    got = services.claim_keyed(
        queue="default",
        limit=4,
        worker_id="w",
        clock=clock,
        lease=timedelta(seconds=30),
    )
    assert len(got.jobs) == 2
    last = clock.readings[-1]
    assert len(clock.readings) == 3  # before the locks, after them, after the start
    assert set(got.start_at.values()) == {last + START_HANDOFF}
    # The attempts' start is the claim's time, the slot later: never the other way round.
    assert all(job.last_attempted_at == clock.readings[1] for job in got.jobs)
    # Each key's next slot is one spacing after this one.
    states = dict(LimitState.objects.values_list("key", "rate_next_at"))
    assert set(states.values()) == {last + START_HANDOFF + start_spacing("5/s")}


def test_only_jobs_actually_started_take_a_slot():
    """A job chosen but taken meanwhile by another claim (here: no longer queued) leaves its
    key's slot untaken."""
    (job,) = keyed(1)
    clock = SteppingClock(timezone.now(), timedelta(0))

    def taken_meanwhile():
        if len(clock.readings) == 1:  # the reading once the keys' locks are held
            Job.objects.filter(pk=job.id).update(status=JobStatus.RUNNING)
        return clock()

    got = services.claim_keyed(
        queue="default", limit=1, worker_id="w", clock=taken_meanwhile, lease=timedelta(seconds=30)
    )
    assert got.jobs == [] and got.start_at == {}
    state = LimitState.objects.get(key=Job.objects.get(pk=job.id).limit_key)
    assert state.rate_next_at is None


def test_a_claim_for_no_idle_slot_says_rate_limited_jobs_wait(runner):
    """Without an idle slot thread, jobs under a rate limit are left, and the claim says so
    (``held_back``; the claimer's ``wants_idle_slot``); with one, one is taken."""
    keyed(2)
    r = runner()
    now = timezone.now()
    busy = r.claimer.claim(4, idle=0, clock=lambda: now)
    assert busy.jobs == [] and busy.wants_idle_slot and r.claimer.idle_slot_wanted(now=now)
    one = r.claimer.claim(4, idle=1, clock=lambda: now)
    assert len(one.jobs) == 1 and len(one.start_at) == 1
    # The key's other job waits for its next slot, not for an idle thread.
    assert not one.wants_idle_slot
    assert not r.claimer.idle_slot_wanted(now=now)  # (its next slot is in the future)
    assert one.retry_at is not None and one.retry_at > now
    assert r.claimer.idle_slot_wanted(now=one.retry_at)  # and then it is near


def test_a_late_start_within_the_tolerance_starts(runner, backend):
    """A slot thread that reaches the slot late, but within START_TOLERANCE, starts the job
    (a thread waking for its slot is often tens of milliseconds late on a loaded machine);
    later than that it gives the job back (tests/test_limits.py)."""
    keyed(1)
    r = runner()
    got = r.claimer.claim(1, idle=1)
    slots = Slots(
        size=1,
        executor=r.executor,
        prefetch=r.sizing,
        worker_id=r.worker_id,
        wake=threading.Event(),
        stopping=threading.Event(),
    )
    slots.dispatch(got.jobs, got.start_at)
    execution = slots.inflight[str(got.jobs[0].pk)]
    assert isinstance(execution, TimedExecution)
    with freeze_time(timezone.now()):
        execution.start_at = timezone.now() - START_TOLERANCE
        assert slots.start_on_time(execution)
    assert execution.state is ExecutionState.RUNNING


def test_a_full_buffer_still_claims_for_a_held_slot_thread(runner):
    """The main loop's side: with the buffer full (no claim ahead) but a slot thread idle and
    jobs under a rate limit waiting for one, a round claims those alone, as timed jobs for
    that thread; plain jobs stay queued."""
    keyed(1)
    plain = [tasks.add.enqueue(i, i) for i in range(3)]
    r = runner(concurrency=1, prefetch=1)
    # A claim with no idle thread: the plain jobs, into the buffer; the keyed one left.
    first = r.claimer.claim(2, idle=0)
    assert {str(job.pk) for job in first.jobs} <= {p.id for p in plain}
    assert r.claimer.wants_idle_slot
    r.slots.dispatch(first.jobs)
    assert r.slots.load(0).buffered == 2  # more than the low water mark: no claim ahead
    assert r._step() is not None
    timed = [e for e in r.slots.inflight.values() if isinstance(e, TimedExecution)]
    assert len(timed) == 1 and timed[0].job.limit_key == "key:a"
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 1  # the third plain job


def test_a_slot_thread_waits_one_round_for_a_rate_limited_job(runner):
    """A slot thread that came free while jobs under a rate limit want an idle thread wakes
    the main loop and waits until a round that began after it is over (so that round's
    claim counted it idle); one thread at a time, none when nothing wants one."""
    wanted = threading.Event()
    wake = threading.Event()
    slots = Slots(
        size=2,
        executor=runner().executor,
        prefetch=runner().sizing,
        worker_id="w",
        wake=wake,
        stopping=threading.Event(),
        wants_idle_slot=wanted.is_set,
    )
    assert not slots.hold_for_timed(timeout=0)  # nothing wants one
    wanted.set()
    earlier = slots.begin_round()  # a round already under way when the thread came free
    held: list[bool] = []
    thread = threading.Thread(target=lambda: held.append(slots.hold_for_timed(timeout=30)))
    thread.start()
    wait_until(wake.is_set, message="the held thread to wake the main loop")
    assert not slots.hold_for_timed(timeout=0)  # another thread is held already
    slots.end_round(earlier)
    assert thread.is_alive()  # (that round's load did not count it idle)
    slots.end_round(slots.begin_round())
    thread.join(30)
    assert held == [True]
