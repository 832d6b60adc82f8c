"""An enqueue with ``depends_on`` (which locks its parents) crossing a transition's cascade
(which locks the job that ends, then its dependents and its batch): the enqueue never fails
its caller with a deadlock (PostgreSQL, MariaDB/MySQL; SQLite has one writer).

Each test holds the transition's first lock on one connection, starts the enqueue on another,
waits until the enqueue is blocked on that lock (read from the server's lock views, every wait
bounded), then lets the transition go on into the rows the enqueue holds."""

import logging
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from asyncjobs import batch, get_batch, services
from asyncjobs.models import Job, JobStatus
from tests import tasks
from tests.conftest import start_in_thread, wait_until, waiting_for_a_lock

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server, pytest.mark.slow]


def _waiting_pair():
    """A queued parent and a job waiting for it, the waiting one first in the database's key
    order (so an enqueue depending on both locks it before the parent). The database's
    order, not Python's: MariaDB's UUID type sorts the groups of a UUID from the last."""
    while True:
        parent = tasks.noop.enqueue()
        waiting = tasks.noop.using(depends_on=[parent]).enqueue()
        pair = Job.objects.filter(pk__in=[parent.id, waiting.id]).order_by("pk")
        if str(pair.values_list("pk", flat=True).first()) == str(waiting.id):
            return parent, waiting
        Job.objects.filter(pk__in=[parent.id, waiting.id]).delete()


def _deadlock_timeout(seconds):
    """On PostgreSQL, how long this connection waits for a lock before it looks for a
    deadlock (and, finding one, fails itself). PostgreSQL looks once per wait: the one that
    looks first after the cycle closed is failed. (InnoDB looks at once, and fails the
    lighter transaction.)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET deadlock_timeout = '{int(seconds)}s'")


def _cross(hold, then, other):
    """In a transaction on one connection, ``hold`` (a first lock); then ``other`` on another
    connection, until it waits for a lock; then ``then`` in the first transaction. Returns
    what ``other`` and ``then`` return (or raises what they raised). Where the two deadlock,
    PostgreSQL fails ``other``, whatever the load: it looks after 3 s, the first after 10 s."""
    held, go_on = threading.Event(), threading.Event()

    def holder():
        _deadlock_timeout(10)
        with transaction.atomic():
            hold()
            held.set()
            assert go_on.wait(30)
            return then()

    def run_other():
        _deadlock_timeout(3)
        return other()

    holding = start_in_thread(holder)
    assert held.wait(30)
    running = start_in_thread(run_other)
    # (InnoDB refreshes its transactions view only when it was not read for 0.1 s.)
    wait_until(waiting_for_a_lock, timeout=20, interval=0.2, message="a lock wait")
    go_on.set()
    return running(), holding()


def test_an_enqueue_crossing_a_cancel_cascade_does_not_fail(caplog):
    """The enqueue locks the waiting job, then waits for its parent, which a cancel holds;
    the cancel's cascade then wants the waiting job: the database breaks the cycle, and the
    enqueue, if it is the one failed, is tried again, unseen by its caller."""
    parent, waiting = _waiting_pair()
    caplog.set_level(logging.INFO, logger="asyncjobs")
    child, _ = _cross(
        lambda: Job.objects.select_for_update().get(pk=parent.id),
        lambda: services.cancel_jobs([parent.id], now=timezone.now()),
        lambda: tasks.noop.using(depends_on=[waiting, parent]).enqueue(),
    )
    assert Job.objects.get(pk=parent.id).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=waiting.id).status == JobStatus.CANCELLED
    # Enqueued after the cancel committed: its parents had been cancelled.
    assert Job.objects.get(pk=child.id).status == JobStatus.CANCELLED
    # The crossing happened, and the enqueue was the one run again.
    assert [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()] == [
        "enqueue with depends_on: the database broke a deadlock with it; running it again (1)"
    ]


def test_an_enqueue_crossing_a_failure_cascade_does_not_fail():
    parent, waiting = _waiting_pair()
    claimed = services.claim_job(
        parent.id, worker_id="w", now=timezone.now(), lease=timezone.timedelta(seconds=60)
    )

    def fail():
        return services.record_failure(
            claimed, worker_id="w", error=ValueError("no"), now=timezone.now(), retryable=False
        )

    child, status = _cross(
        lambda: Job.objects.select_for_update().get(pk=parent.id),
        fail,
        lambda: tasks.noop.using(depends_on=[waiting, parent]).enqueue(),
    )
    assert status == JobStatus.FAILED
    assert Job.objects.get(pk=waiting.id).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=child.id).status == JobStatus.CANCELLED


@pytest.mark.postgres
def test_a_cancel_crossing_an_enqueue_in_a_transaction_does_not_fail(caplog):
    """The other way round: the enqueue runs inside its caller's transaction, which holds the
    waiting job; the operator's cancel of the parent waits for it, then the enqueue waits for
    the cancel. PostgreSQL fails the cancel (the first to wait), which runs again once the
    caller's transaction has committed: neither caller sees the deadlock. (InnoDB would
    fail the lighter transaction, the enqueue's, rolled back whole with its caller's:
    MariaDB/MySQL cannot run it again, and say so with the error.)"""
    parent, waiting = _waiting_pair()
    caplog.set_level(logging.INFO, logger="asyncjobs")
    cancelled, child = _cross(
        lambda: Job.objects.select_for_update().get(pk=waiting.id),
        lambda: tasks.noop.using(depends_on=[waiting, parent]).enqueue(),
        lambda: services.cancel_job(parent.id),
    )
    assert cancelled.status == JobStatus.CANCELLED
    # Enqueued first: cancelled by the cancel's cascade, through the waiting job.
    assert Job.objects.get(pk=child.id).status == JobStatus.CANCELLED
    assert [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()] == [
        "cancel: the database broke a deadlock with it; running it again (1)"
    ]


def test_jobs_are_locked_before_batches_so_a_batch_enqueue_never_deadlocks(caplog):
    """A job of a batch fails; the job waiting for it is the parent of a job enqueued into
    the same batch. The enqueue holds that parent, then needs the batch's row; the failure
    cancels its dependents before it moves its batch's counters (job rows before batch rows,
    on every transition), so the two queue behind each other: neither fails, nothing is
    tried again."""
    with batch() as b:
        b.enqueue(tasks.noop)
    (member,) = Job.objects.filter(batch_id=b.id)
    waiting = tasks.noop.using(depends_on=[member.pk]).enqueue()
    claimed = services.claim_job(
        member.pk, worker_id="w", now=timezone.now(), lease=timezone.timedelta(seconds=60)
    )
    caplog.set_level(logging.INFO, logger="asyncjobs")

    def fail():
        return services.record_failure(
            claimed, worker_id="w", error=ValueError("no"), now=timezone.now(), retryable=False
        )

    status, child = _cross(
        lambda: Job.objects.select_for_update().get(pk=waiting.id),
        lambda: get_batch(b.id).enqueue(tasks.noop.using(depends_on=[waiting])),
        fail,
    )
    assert status == JobStatus.FAILED
    assert Job.objects.get(pk=waiting.id).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=child.id).status == JobStatus.CANCELLED
    assert b.refresh().cancelled == 1
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]
