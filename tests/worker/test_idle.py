"""An idle worker sleeps, whatever limits it serves (issue: the idle spin after a
rate-limited job). Each case runs a real ``runworker`` subprocess, lets it finish one job,
leaves it idle for a few seconds and counts what it did to the database over its whole life:
transactions committed on PostgreSQL (``pg_stat_database``), statements on SQLite and
MariaDB/MySQL (counted by ``tests.apps``). A spinning worker makes thousands; a sleeping one a
few dozen (its polls and heartbeats)."""

import json
import signal
import subprocess

import pytest
from django.db import connection

from asyncjobs.models import Job, JobStatus
from tests import tasks
from tests.conftest import wait_until

IDLE_SECONDS = 4.0


def committed_transactions():
    """Transactions committed in the test database so far (every backend's, flushed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]


def worker_activity(worker_process, tmp_path, queues, enqueue):
    """Run a worker of ``queues`` limits through one job and IDLE_SECONDS of idleness;
    return how many transactions (PostgreSQL) or statements (SQLite, MariaDB/MySQL) it
    made."""
    count_file = tmp_path / f"statements-{len(list(tmp_path.iterdir()))}.txt"
    env = {
        "ASYNCJOBS_TEST_QUEUES": json.dumps(queues),
        "ASYNCJOBS_TEST_COUNT_STATEMENTS": str(count_file),
    }
    postgres = connection.vendor == "postgresql"
    before = committed_transactions() if postgres else 0
    result = enqueue()
    worker = worker_process("--concurrency", "2", poll=0.5, extra_env=env)
    wait_until(
        lambda: Job.objects.filter(pk=result.id, status=JobStatus.SUCCEEDED).exists(),
        message="the job to finish",
    )
    # Waiting out the idle time is the measurement itself: a bounded, fixed window.
    _idle(worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    if postgres:
        # A backend's statistics are flushed when it exits; the worker's have.
        return committed_transactions() - before
    return int(count_file.read_text())


def _idle(worker):
    try:
        worker.proc.wait(timeout=IDLE_SECONDS)
    except subprocess.TimeoutExpired:  # still running, as it should be
        return
    pytest.fail(f"the worker exited while idle:\n{worker.output()}")


CASES = {
    "queue rate limit": (
        {"other": {"RATE_LIMIT": "5/s"}},
        lambda: tasks.add.using(queue_name="other").enqueue(1, 2),
    ),
    "queue concurrency limit": (
        {"other": {"CONCURRENCY": 1}},
        lambda: tasks.add.using(queue_name="other").enqueue(1, 2),
    ),
    "task rate limit": ({}, lambda: tasks.rated.enqueue(1)),
    "key concurrency limit": ({}, lambda: tasks.per_account.enqueue("acme")),
}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", list(CASES))
def test_an_idle_worker_sleeps_whatever_limits_it_serves(worker_process, tmp_path, case):
    plain = worker_activity(
        worker_process, tmp_path, {}, lambda: tasks.add.using(queue_name="other").enqueue(1, 2)
    )
    queues, enqueue = CASES[case]
    assert plain > 0, "the worker's activity was not counted"
    limited = worker_activity(worker_process, tmp_path, queues, enqueue)
    # Spinning made ~470 transactions a second on PostgreSQL; sleeping, a few dozen in all.
    assert limited <= 3 * plain + 50, (case, plain, limited)
