"""The reads served by the indexes that migration 0014 made partial or dropped, as each
database plans them beside thousands of rows those indexes leave out: deleting a user (its
jobs' ``enqueued_by``) reads the partial index of jobs that have a user, the metrics' recent
attempts the partial index of ended attempts, a job's attempts (and a job's deletion) the
unique (job, number) index, and pruning the (status, finished_at) index. And what they do
stays right: the user's jobs keep their rows, the metrics count what ended lately."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from asyncjobs import monitoring
from asyncjobs.models import Attempt, AttemptOutcome, Job, JobStatus
from asyncjobs.services import prune_jobs
from tests.conftest import old_finished_jobs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FINISHED = 3000


def _analyze():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE asyncjobs_job")
            cursor.execute("ANALYZE asyncjobs_attempt")
        elif connection.vendor == "mysql":
            cursor.execute("ANALYZE TABLE asyncjobs_job, asyncjobs_attempt")
            cursor.fetchall()
        else:
            cursor.execute("ANALYZE")


def _plan(sql, params=()):
    """The plan of one statement as text (the database's own EXPLAIN)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        else:
            cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(" ".join(str(cell) for cell in row) for row in cursor.fetchall())


def _unique_index():
    """The name of the attempt table's unique (job, number) index on this database (SQLite
    names a table's UNIQUE constraint itself)."""
    if connection.vendor == "sqlite":
        return "sqlite_autoindex_asyncjobs_attempt_1"
    return "asyncjobs_attempt_job_number"


def _statements(captured, table, word):
    """The statements ``captured`` that name ``table`` and hold ``word``."""
    quoted = connection.ops.quote_name(table)
    return [q["sql"] for q in captured.captured_queries if quoted in q["sql"] and word in q["sql"]]


@pytest.fixture
def history():
    """FINISHED jobs that succeeded long ago with no user, each with its ended attempt; the
    statistics up to date."""
    old_finished_jobs(FINISHED)
    Attempt.objects.update(
        finished_at=timezone.now() - timedelta(days=30), outcome=AttemptOutcome.SUCCEEDED
    )
    _analyze()


def _job(**fields):
    now = timezone.now()
    return Job.objects.create(task_path="tests.tasks.add", enqueued_at=now, run_after=now, **fields)


def test_deleting_a_user_reads_the_index_of_jobs_with_a_user(history):
    owner = User.objects.create_user("owner")
    mine = [_job(enqueued_by=owner) for _ in range(3)]
    _analyze()
    with CaptureQueriesContext(connection) as captured:
        owner.delete()
    (statement,) = _statements(captured, "asyncjobs_job", "enqueued_by_id")
    assert "asyncjobs_job_enqueued_by" in _plan(statement)
    # SET_NULL: the jobs stay, without their user.
    assert (
        list(Job.objects.filter(pk__in=[j.pk for j in mine]).values_list("enqueued_by_id"))
        == [(None,)] * 3
    )


def test_recent_attempts_read_the_index_of_ended_attempts(history):
    now = timezone.now()
    running = _job(status=JobStatus.RUNNING, attempts=1)
    Attempt.objects.create(job=running, number=1, worker_id="w", started_at=now)
    ended = _job(status=JobStatus.SUCCEEDED, attempts=1, finished_at=now)
    Attempt.objects.create(
        job=ended,
        number=1,
        worker_id="w",
        started_at=now - timedelta(seconds=2),
        finished_at=now - timedelta(seconds=1),
        outcome=AttemptOutcome.SUCCEEDED,
    )
    _analyze()
    with CaptureQueriesContext(connection) as captured:
        _, seconds, total = monitoring.duration_histogram(now=now)
        outcomes = monitoring.outcomes_recent(now=now)
    assert total == 1 and seconds == pytest.approx(1.0)
    assert outcomes == {AttemptOutcome.SUCCEEDED: 1}
    statements = _statements(captured, "asyncjobs_attempt", "finished_at")
    assert len(statements) == 2
    for statement in statements:
        assert "asyncjobs_attempt_ended" in _plan(statement)


def test_a_jobs_attempts_and_its_deletion_read_the_unique_index(history):
    job = Job.objects.filter(status=JobStatus.SUCCEEDED).first()
    assert _unique_index() in job.attempt_set.all().explain()
    with CaptureQueriesContext(connection) as captured:
        job.delete()
    (cascade,) = _statements(captured, "asyncjobs_attempt", "DELETE")
    assert _unique_index() in _plan(cascade)
    assert not Attempt.objects.filter(job_id=job.pk).exists()


def test_pruning_reads_finished_jobs_by_status_and_age(history):
    now = timezone.now()
    old = Job.objects.filter(status=JobStatus.SUCCEEDED, finished_at__lt=now - timedelta(days=7))
    assert "asyncjobs_job_status_finished" in old.order_by("finished_at").explain()
    assert prune_jobs(now=now, older_than={JobStatus.SUCCEEDED: timedelta(days=7)}) == {
        JobStatus.SUCCEEDED: FINISHED
    }
    assert not Attempt.objects.exists()
