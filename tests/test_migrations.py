"""asyncjobs' migrations both ways on the database under test: back to zero (on PostgreSQL
that drops the NOTIFY triggers and their functions, restoring 0001's functions on the way)
and forward again, ending with a schema that works as a fresh one does. The test database
itself is made by running them forward from zero, so that direction runs on every test run.
"""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from asyncjobs import db
from asyncjobs.models import JobStatus
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def _tables():
    names = connection.introspection.table_names()
    return {name for name in names if name.startswith("asyncjobs_")}


def _notify_objects():
    """The NOTIFY triggers and functions installed (PostgreSQL), as sorted names."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'asyncjobs%%' AND NOT tgisinternal "
            "UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE 'asyncjobs%%'"
        )
        return sorted(row[0] for row in cursor.fetchall())


def test_migrations_go_back_to_zero_and_forward_again():
    tables = _tables()
    assert {"asyncjobs_job", "asyncjobs_attempt"} <= tables
    call_command("migrate", "asyncjobs", "zero", verbosity=0)
    assert _tables() == set()
    if connection.vendor == "postgresql":
        assert _notify_objects() == []
    call_command("migrate", verbosity=0)
    assert _tables() == tables
    if connection.vendor == "postgresql":
        assert _notify_objects() == [
            "asyncjobs_job_inserted",
            "asyncjobs_job_ready",
            "asyncjobs_notify_inserted",
            "asyncjobs_notify_ready",
        ]
    result = tasks.add.enqueue(2, 3)
    strategy = db.for_alias("default")
    claimed = strategy.claim(
        queues=["default"], limit=5, worker_id="w1", now=timezone.now(), lease=timedelta(seconds=30)
    )
    assert [(str(job.pk), job.status) for job in claimed] == [(result.id, JobStatus.RUNNING)]


@pytest.mark.postgres
def test_triggers_notify_after_migrating_back_and_forward():
    call_command("migrate", "asyncjobs", "0003", verbosity=0)
    call_command("migrate", verbosity=0)
    listener = db.for_alias("default").listen()
    try:
        assert listener.wait(0.05) == []  # connects and listens
        tasks.add.enqueue(1, 1)
        assert listener.wait(5) == ["ready:default"]
    finally:
        listener.close()


def _batch_index():
    """The columns of the partial index asyncjobs_job_batch, in order, and its condition."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'asyncjobs_job' "
                "AND indexname = 'asyncjobs_job_batch'"
            )
            return [row[0] for row in cursor.fetchall()]
        if connection.vendor == "mysql":
            cursor.execute(
                "SELECT column_name FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = 'asyncjobs_job' "
                "AND index_name = 'asyncjobs_job_batch' ORDER BY seq_in_index"
            )
            return [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'asyncjobs_job_batch'")
        return [row[0] for row in cursor.fetchall()]


def test_the_batch_index_exists_after_migrating_back_and_forward():
    """0009's index on (batch, status), built online, is there (and comes back)."""
    for _ in range(2):
        found = _batch_index()
        if connection.vendor == "mysql":
            # MariaDB/MySQL have no partial index: a full one on the same columns.
            assert [c.lower() for c in found] == ["batch_id", "status"]
        else:
            (definition,) = found
            normalised = definition.replace('"', "").replace(" ", "").lower()
            assert "(batch_id,status)" in normalised
            assert "wherebatch_idisnotnull" in normalised.replace("(", "").replace(")", "")
        call_command("migrate", "asyncjobs", "0008", verbosity=0)
        assert _batch_index() == []
        call_command("migrate", verbosity=0)
