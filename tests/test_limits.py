"""Rate and concurrency limits per queue, cluster-wide."""

import dataclasses
import json
import signal
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs import enqueue_many
from asyncjobs.checks import check_settings
from asyncjobs.conf import parse_rate
from asyncjobs.models import Attempt, Job, JobStatus, QueueState, Worker
from asyncjobs.services import (
    START_ALLOWANCE,
    START_HANDOFF,
    START_LEAD,
    START_TOLERANCE,
    start_spacing,
)
from asyncjobs.worker.executor import Executor
from asyncjobs.worker.prefetch import Prefetch
from asyncjobs.worker.slots import ExecutionState, Slots, TimedExecution
from tests import tasks
from tests.conftest import wait_until


@pytest.mark.parametrize(
    ("rate", "seconds"),
    [("10/s", 0.1), ("100/m", 0.6), ("5/h", 720), ("3/10s", 10 / 3), (" 2 / 1m ", 30)],
)
def test_parse_rate(rate, seconds):
    assert parse_rate(rate) == timedelta(seconds=seconds)


@pytest.mark.parametrize("rate", ["10", "0/s", "ten/s", "5/d", "5/0s"])
def test_invalid_rates(rate, settings):
    with pytest.raises(ValueError, match="Invalid rate"):
        parse_rate(rate)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"RATE_LIMIT": rate}}}
    assert [m.id for m in check_settings()] == ["asyncjobs.E008"]


def test_invalid_concurrency_is_reported(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"CONCURRENCY": 0}}}
    assert [m.id for m in check_settings()] == ["asyncjobs.E008"]


@pytest.mark.django_db
@pytest.mark.parametrize("every_queue", [False, True], ids=["named-queue", "every-queue"])
def test_rate_limit_spaces_starts_and_never_fails_jobs(settings, runner, every_queue):
    """Whether the worker names the queue or serves every queue (no QUEUES list in TASKS,
    no --queue), with a plain queue's job beside the limited ones."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"RATE_LIMIT": "2/s"}}}
    enqueue_many([(tasks.add.using(queue_name="other"), (i, i), {}) for i in range(5)])
    if every_queue:
        settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": []}}
        plain = tasks.add.enqueue(1, 1)
    t0 = timezone.now()
    if every_queue:
        r = runner()
        assert r.queues is None and r.claimer.limited == {"other"}
        assert r.run_once(now=t0) == 2  # the plain job, and one of the limited queue
        assert Job.objects.get(pk=plain.id).status == JobStatus.SUCCEEDED
    else:
        r = runner(queues=["other"])
        assert r.run_once(now=t0) == 1
    assert r.run_once(now=t0 + timedelta(seconds=0.2)) == 0  # held back, still queued
    assert r.run_once(now=t0 + timedelta(seconds=0.5)) == 1
    assert r.run_once(now=t0 + timedelta(seconds=1.1)) == 1
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 2
    assert not Job.objects.filter(status=JobStatus.FAILED).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("every_queue", [False, True], ids=["named-queue", "every-queue"])
def test_concurrency_limit_counts_running_jobs(settings, runner, every_queue):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"CONCURRENCY": 2}}}
    enqueue_many([(tasks.add.using(queue_name="other"), (i, i), {}) for i in range(5)])
    now = timezone.now()
    if every_queue:
        settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": []}}
    r = runner() if every_queue else runner(queues=["other"])
    first = claim(r, 10, now).jobs
    assert len(first) == 2
    assert claim(r, 10, now).jobs == []
    from asyncjobs.services import record_success

    record_success(first[0], worker_id=r.worker_id, return_value=0, now=now)
    assert len(claim(r, 10, now).jobs) == 1
    # (Leases of a dead holder release the slot: see the SIGKILL test.)


def claim(r, limit, now, **kwargs):
    """A claim by runner ``r``'s claimer at the fixed time ``now``."""
    return r.claimer.claim(limit, clock=lambda: now, **kwargs)


def overlap(attempts):
    """The largest number of attempts running at the same instant."""
    edges = sorted(
        [(a.started_at, 1) for a in attempts] + [(a.finished_at, -1) for a in attempts],
        key=lambda e: (e[0], e[1]),
    )
    current = peak = 0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak


def most_in_one_window(starts, period=1.0):
    """The most starts (``time.time()`` values) in any window of ``period`` seconds, as the
    remote service counts them: ``[t, t + period)`` for every ``t``."""
    starts = sorted(starts)
    most, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_most_in_one_window():
    assert most_in_one_window([]) == 0
    assert most_in_one_window([0.0, 0.5, 0.999, 1.0, 1.5]) == 3
    assert most_in_one_window([0.0, 1.0, 2.0]) == 1
    assert most_in_one_window([0.0, 0.1, 0.2], period=0.15) == 2


@pytest.mark.django_db
def test_a_claim_gives_rate_limited_jobs_start_slots(settings, runner):
    """Slots lie START_HANDOFF to START_LEAD after the claim, (period + START_ALLOWANCE) / N
    apart; plain and concurrency-limited jobs get none; none is given while no slot thread
    is idle."""
    settings.ASYNCJOBS = {
        **settings.ASYNCJOBS,
        "QUEUES": {"other": {"RATE_LIMIT": "10/s"}, "low": {"CONCURRENCY": 5}},
    }
    enqueue_many([(tasks.stamp, (i,), {}) for i in range(3)])
    tasks.add.using(queue_name="low").enqueue(1, 1)
    r = runner(queues=["other", "low"])
    only_concurrency = r.claimer.claim(5, idle=0)
    assert only_concurrency.jobs != [] and only_concurrency.start_at == {}
    before = timezone.now()
    got = r.claimer.claim(5, idle=5)
    first = got.jobs
    assert [j.queue_name for j in first] == ["other"]
    slot = got.start_at[first[0].pk]
    assert before + START_HANDOFF <= slot <= timezone.now() + START_HANDOFF
    # Claim again when the next slot comes within START_LEAD, or now if that moment passed
    # while this claim ran (a claim slower than the 3 ms between them on a busy machine).
    due = slot + start_spacing("10/s") - START_LEAD
    assert due <= got.retry_at <= max(due, timezone.now())
    assert start_spacing("10/s") == (timedelta(seconds=1) + START_ALLOWANCE) / 10
    # The next slot may be taken START_LEAD ahead of it, not before.
    early = slot + start_spacing("10/s") - START_LEAD - timedelta(milliseconds=1)
    assert claim(r, 5, early, idle=5).jobs == []
    second = claim(r, 5, early + timedelta(milliseconds=1), idle=5)
    assert second.start_at[second.jobs[0].pk] == slot + start_spacing("10/s")


@pytest.mark.django_db
def test_a_rate_limited_job_starts_at_its_slot_or_is_given_back(settings, runner, backend):
    """The slot thread's side: never before the slot; given back unstarted (no attempt left,
    attempts as before) when it reaches the slot past START_TOLERANCE or the worker stops."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"RATE_LIMIT": "10/s"}}}
    enqueue_many([(tasks.stamp, (i,), {}) for i in range(2)])
    r = runner(queues=["other"])
    stop = threading.Event()
    slots = Slots(
        size=1,
        executor=Executor(backend, r.worker_id, clock=timezone.now),
        prefetch=Prefetch(slots=1, most=0),
        worker_id=r.worker_id,
        wake=threading.Event(),
        stopping=stop,
    )

    def claimed():
        QueueState.objects.filter(name="other").update(rate_next_at=None)
        got = r.claimer.claim(1, idle=1)
        slots.dispatch(got.jobs, got.start_at)
        execution = slots.inflight[str(got.jobs[0].pk)]
        assert isinstance(execution, TimedExecution)
        assert execution.state is ExecutionState.TIMED
        return execution

    on_time = claimed()
    assert slots.start_on_time(on_time)
    assert timezone.now() >= on_time.start_at
    assert on_time.state is ExecutionState.RUNNING and on_time.thread is not None

    late = claimed()
    late.start_at = timezone.now() - START_TOLERANCE - timedelta(milliseconds=1)
    assert not slots.start_on_time(late)
    assert late.state is ExecutionState.RELEASED and str(late.job.pk) not in slots.inflight
    job = Job.objects.get(pk=late.job.pk)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 0, "")
    assert not Attempt.objects.filter(job=job).exists()

    stopping = claimed()
    stop.set()
    assert not slots.start_on_time(stopping)
    assert Job.objects.get(pk=stopping.job.pk).status == JobStatus.QUEUED


def starts_under_simulated_time(runners, *, seconds, step=timedelta(milliseconds=50)):
    """Let ``runners`` (in-process workers sharing the database) take turns, one every
    ``step`` of a simulated clock (the ``now`` each claim is given), for ``seconds``.
    Returns the simulated start of every attempt, in seconds from the first turn."""
    t0 = timezone.now()
    turns = int(timedelta(seconds=seconds) / step)
    for turn in range(turns):
        runners[turn % len(runners)].run_once(now=t0 + turn * step)
    return {
        attempt.job_id: (attempt.started_at - t0).total_seconds()
        for attempt in Attempt.objects.all()
    }


@pytest.mark.django_db
def test_a_queue_rate_limit_holds_across_workers(settings, runner):
    """10/s on one queue, four workers taking turns on a simulated clock: the start slots
    come from the database, so the limit is the cluster's, not each worker's. No window of
    one second holds more than 10 starts, give or take the one a claim may take START_LEAD
    ahead of its slot; the 25 jobs take at least 24 slots' spacing, and no more than a
    second beyond it. (How close real starts come to their slots under load is measured by
    bench/rate_limit.py --busy, not here.)"""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"other": {"RATE_LIMIT": "10/s"}}}
    enqueue_many([(tasks.stamp, (i,), {}) for i in range(25)])
    workers = [runner(queues=["other"], concurrency=4) for _ in range(4)]
    starts = starts_under_simulated_time(workers, seconds=3.5)
    assert len(starts) == 25
    assert most_in_one_window(starts.values()) <= 11, sorted(starts.values())
    spacing = start_spacing("10/s").total_seconds()
    span = max(starts.values()) - min(starts.values())
    assert 24 * spacing - START_LEAD.total_seconds() <= span <= 24 * spacing + 1.0
    by_worker = set(Attempt.objects.values_list("worker_id", flat=True))
    assert len(by_worker) == 4  # every worker had its turn at the shared limit
    assert not Job.objects.exclude(status=JobStatus.SUCCEEDED).exists()


@pytest.mark.django_db
def test_a_per_key_rate_limit_holds_across_workers(runner):
    """A per-key limit_rate of 5/s, two keys, two workers taking turns on a simulated clock:
    each key keeps to its own limit (give or take one start, as above), and the keys are
    independent (together they pass 5 in a second). bench/rate_limit.py --per-key measures
    real starts."""
    enqueue_many(
        [
            (tasks.stamp_per_key.using(concurrency_key=f"partner:{key}"), (key,), {})
            for key in ("a", "b")
            for _ in range(8)
        ]
    )
    starts = starts_under_simulated_time([runner(), runner()], seconds=2.5)
    assert len(starts) == 16
    for key in ("a", "b"):
        ids = Job.objects.filter(limit_key=f"key:partner:{key}").values_list("pk", flat=True)
        assert most_in_one_window([starts[pk] for pk in ids]) <= 6
    assert most_in_one_window(starts.values()) > 6  # not one shared limit


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_concurrency_limit_holds_across_workers_and_survives_sigkill(worker_process):
    limits = {"ASYNCJOBS_TEST_QUEUES": json.dumps({"other": {"CONCURRENCY": 2}})}
    timings = {"lease": 2, "heartbeat": 0.5, "maintenance": 0.5, "poll": 0.1}
    # Holds a slot when its worker is killed; its re-run returns at once.
    victim = tasks.die_once.using(queue_name="other").enqueue("slot-holder", 60)
    a = worker_process("--queue", "other", "--concurrency", "4", extra_env=limits, **timings)
    from tests.models import Execution

    wait_until(
        lambda: Execution.objects.filter(label="slot-holder").exists(), message="victim runs"
    )
    enqueue_many([(tasks.hold, (0.3,), {}) for _ in range(10)])
    a.signal(signal.SIGKILL)
    a.wait(10)
    workers = [
        worker_process("--queue", "other", "--concurrency", "4", extra_env=limits, **timings)
        for _ in range(3)
    ]
    wait_until(
        lambda: Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 11,
        timeout=60,
        message="jobs after the kill",
    )
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        w.wait(90)
    attempts = [a for a in Attempt.objects.all() if a.finished_at is not None]
    assert overlap(attempts) <= 2
    lost = Attempt.objects.get(job_id=victim.id, number=1)
    assert lost.outcome == "lost"  # the dead worker's slot came back through its lease
    assert Worker.objects.filter(status="lost").count() == 1


def keyed(account, seconds=0):
    return (tasks.per_account.using(concurrency_key=f"account:{account}"), (account, seconds), {})


@pytest.mark.django_db
def test_per_key_concurrency_in_process(runner):
    from asyncjobs.services import record_success

    enqueue_many([keyed("a"), keyed("a"), keyed("a"), keyed("b"), keyed("b")])
    job = Job.objects.filter(args=["a", 0]).first()
    assert (job.limit_key, job.limit_concurrency) == ("key:account:a", 1)
    r = runner()
    now = timezone.now()
    first = claim(r, 10, now).jobs
    assert sorted(j.args[0] for j in first) == ["a", "b"]
    assert claim(r, 10, now).jobs == []
    a_job = next(j for j in first if j.args[0] == "a")
    record_success(a_job, worker_id=r.worker_id, return_value="a", now=now)
    assert [j.args[0] for j in claim(r, 10, now).jobs] == ["a"]


@pytest.mark.django_db
def test_a_saturated_key_does_not_hide_free_keys(runner):
    enqueue_many([keyed("hot") for _ in range(60)])
    tasks.per_account.using(concurrency_key="account:cold", priority=-50).enqueue("cold")
    r = runner()
    now = timezone.now()
    assert [j.args[0] for j in claim(r, 1, now).jobs] == ["hot"]
    assert [j.args[0] for j in claim(r, 10, now).jobs] == ["cold"]


@pytest.mark.django_db
def test_per_task_concurrency_and_rate(runner):
    from asyncjobs.services import record_success

    for _ in range(4):
        tasks.two_at_a_time.enqueue(0)
        tasks.rated.enqueue(1)
    tasks.add.enqueue(1, 1)  # unlimited jobs still flow past the limited ones
    r = runner()
    now = timezone.now()
    claimed = claim(r, 10, now).jobs
    by_task = sorted(j.task_path.rsplit(".", 1)[1] for j in claimed)
    assert by_task == ["add", "rated", "two_at_a_time", "two_at_a_time"]
    assert claim(r, 10, now + timedelta(seconds=0.4)).jobs == []
    later = claim(r, 10, now + timedelta(seconds=0.5)).jobs
    assert [j.task_path.rsplit(".", 1)[1] for j in later] == ["rated"]
    for job in claimed:
        record_success(job, worker_id=r.worker_id, return_value=None, now=now)
    again = claim(r, 10, now + timedelta(seconds=0.6)).jobs
    assert sorted(j.task_path.rsplit(".", 1)[1] for j in again) == ["two_at_a_time"] * 2


@pytest.mark.django_db
def test_a_worker_wakes_for_the_next_slot_of_a_task_or_key_rate_limit(runner):
    """A worker sleeps until a per-task or per-key rate limit may let a waiting job start
    (START_LEAD before its next slot), not a whole poll interval; nothing waiting, no wake."""
    for _ in range(2):
        tasks.rated.enqueue(1)  # 2/s
    r = runner()
    now = timezone.now()
    first = claim(r, 10, now, idle=10)
    assert len(first.jobs) == 1
    next_slot = first.start_at[first.jobs[0].pk] + start_spacing("2/s")
    assert first.retry_at == next_slot - START_LEAD
    throttled = claim(r, 10, now + timedelta(seconds=0.1), idle=10)
    assert throttled.jobs == []
    assert throttled.retry_at == next_slot - START_LEAD  # the key is throttled; its job waits
    second = claim(r, 10, next_slot - START_LEAD, idle=10)
    assert len(second.jobs) == 1 and second.start_at[second.jobs[0].pk] == next_slot
    # Nothing of that key waits any more: the look after the next slot finds none.
    last = claim(r, 10, next_slot, idle=10)
    assert last.jobs == [] and last.retry_at is None


def test_invalid_task_limits():
    from asyncjobs.tasks_api import InvalidTask

    # (A copy with one field changed: Django 6.0's Task has no defaults for its own fields.)
    with pytest.raises(InvalidTask, match="Invalid rate"):
        dataclasses.replace(tasks.rated.using(queue_name="default"), rate_limit="fast")
    with pytest.raises(InvalidTask, match="concurrency_limit"):
        dataclasses.replace(tasks.rated, concurrency_limit=0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_per_key_limit_holds_across_worker_processes(worker_process):
    enqueue_many([keyed(account, 0.2) for account in ("x", "y") for _ in range(5)])
    workers = [worker_process("--concurrency", "3", poll=0.1) for _ in range(3)]
    wait_until(
        lambda: Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 10,
        timeout=60,
        message="keyed jobs",
    )
    # A worker still starting up (Python's imports) when the jobs are done would die of the
    # SIGTERM by the default handler: a registered worker has its handlers installed.
    wait_until(lambda: Worker.objects.count() == len(workers), message="every worker started")
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(30) == 0
    for account in ("x", "y"):
        attempts = list(Attempt.objects.filter(job__limit_key=f"key:account:{account}"))
        assert len(attempts) == 5
        assert overlap(attempts) == 1
