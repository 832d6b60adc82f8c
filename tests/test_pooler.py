"""Connection poolers: the maintenance lease and LISTEN behind PgBouncer in transaction
mode (issue: databases and poolers). scripts/test.sh also runs the worker, flow-control,
scheduler and rescue tests through a real PgBouncer (ASYNCJOBS_TEST_POOLER)."""

import itertools
import logging
import re
import signal
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from asyncjobs import db
from asyncjobs.models import Job, Lease
from tests.conftest import in_thread, old_finished_jobs, wait_until


@pytest.mark.django_db(transaction=True)
def test_a_lease_has_one_holder_until_it_ends_or_expires():
    now = timezone.now()
    minute = timedelta(minutes=1)
    assert Lease.objects.take("m", holder="a", duration=minute, now=now)
    # Another holder, on another connection, is refused while it lasts; the holder renews.
    assert not in_thread(lambda: Lease.objects.take("m", holder="b", duration=minute, now=now))
    assert Lease.objects.take("m", holder="a", duration=minute, now=now)
    assert not Lease.objects.end("m", holder="b")
    assert Lease.objects.end("m", holder="a")
    assert Lease.objects.take("m", holder="b", duration=minute, now=now)
    # A holder that died is replaced once its lease expired.
    assert not Lease.objects.take("m", holder="c", duration=minute, now=now)
    assert Lease.objects.take("m", holder="c", duration=minute, now=now + 2 * minute)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_behind_a_transaction_pooler_the_worker_polls_unless_given_a_direct_connection(
    settings, caplog
):
    strategy = db.for_alias("default")
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "POOL_MODE": "transaction", "LISTEN_DATABASE": None}
    assert not strategy.announces
    with caplog.at_level(logging.WARNING, logger="asyncjobs.db"):
        listener = strategy.listen()
    assert isinstance(listener, db.PollingListener)
    assert "LISTEN_DATABASE" in caplog.text
    listener.close()
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "LISTEN_DATABASE": "default"}
    assert strategy.announces
    listener = strategy.listen()
    assert isinstance(listener, db.PostgresListener)
    listener.close()
    # Detected: Django asks for DISABLE_SERVER_SIDE_CURSORS behind such a pooler.
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "POOL_MODE": None, "LISTEN_DATABASE": None}
    pooled = connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS", False)
    assert strategy.pooled() is bool(pooled)


ROUND = re.compile(r"Maintenance round of process (\d+): ([\d.]+)-([\d.]+)")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_never_do_maintenance_at_once(worker_process):
    """Three workers prune a backlog in rounds of up to a second, then keep taking rounds
    every 0.2 s: the rounds they log never overlap (a session advisory lock behind PgBouncer
    let two workers hold it at once)."""
    old_finished_jobs(6000)
    workers = [
        worker_process(
            "--concurrency",
            "1",
            maintenance=0.2,
            extra_env={"ASYNCJOBS_TEST_PRUNE_BATCH": "50", "ASYNCJOBS_LOG": "DEBUG"},
        )
        for _ in range(3)
    ]

    def rounds():
        return sorted(
            (float(start), float(end), int(pid))
            for worker in workers
            for pid, start, end in ROUND.findall(worker.output())
        )

    wait_until(lambda: not Job.objects.exists(), timeout=60, message="the backlog pruned")
    wait_until(lambda: len(rounds()) >= 10, timeout=60, message="ten maintenance rounds")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(30) == 0
    for (_, end, pid), (start, _, other) in itertools.pairwise(rounds()):
        assert start >= end, f"rounds of {pid} and {other} overlap"
