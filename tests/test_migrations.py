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


def _scale_factors():
    """The tables' own autovacuum_vacuum_scale_factor (None: the server's applies)."""
    found = {}
    with connection.cursor() as cursor:
        for table in ("asyncjobs_job", "asyncjobs_attempt"):
            cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [table])
            options = dict(o.split("=", 1) for o in cursor.fetchone()[0] or [])
            found[table] = options.get("autovacuum_vacuum_scale_factor")
    return found


def test_autovacuum_migration_goes_back_and_forward():
    """0011 runs both ways on every database (a no-op but on PostgreSQL)."""
    call_command("migrate", "asyncjobs", "0010", verbosity=0)
    call_command("migrate", verbosity=0)
    assert tasks.add.enqueue(1, 2).id


@pytest.mark.postgres
def test_job_tables_have_a_low_autovacuum_scale_factor_until_migrated_back():
    assert _scale_factors() == {"asyncjobs_job": "0.01", "asyncjobs_attempt": "0.01"}
    call_command("migrate", "asyncjobs", "0010", verbosity=0)
    assert _scale_factors() == {"asyncjobs_job": None, "asyncjobs_attempt": None}
    call_command("migrate", verbosity=0)
    assert _scale_factors() == {"asyncjobs_job": "0.01", "asyncjobs_attempt": "0.01"}


@pytest.mark.postgres
def test_an_operators_own_scale_factor_is_kept_both_ways():
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE asyncjobs_job SET (autovacuum_vacuum_scale_factor = 0.002)")
    try:
        call_command("migrate", "asyncjobs", "0010", verbosity=0)
        assert _scale_factors() == {"asyncjobs_job": "0.002", "asyncjobs_attempt": None}
        call_command("migrate", verbosity=0)
        assert _scale_factors() == {"asyncjobs_job": "0.002", "asyncjobs_attempt": "0.01"}
    finally:
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE asyncjobs_job SET (autovacuum_vacuum_scale_factor = 0.01)")


def _index(name):
    """An index of the job table: its definition (PostgreSQL, SQLite) or its columns in order
    (MariaDB/MySQL); empty if there is none."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'asyncjobs_job' "
                "AND indexname = %s",
                [name],
            )
            return [row[0] for row in cursor.fetchall()]
        if connection.vendor == "mysql":
            cursor.execute(
                "SELECT column_name FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = 'asyncjobs_job' "
                "AND index_name = %s ORDER BY seq_in_index",
                [name],
            )
            return [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT sql FROM sqlite_master WHERE name = %s", [name])
        return [row[0] for row in cursor.fetchall()]


def _batch_index():
    """The columns of the partial index asyncjobs_job_batch, in order, and its condition."""
    return _index("asyncjobs_job_batch")


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


def _status_check():
    """The job table's status CHECK constraint as the database has it: None if absent, else
    whether it is validated (PostgreSQL) or True."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT convalidated FROM pg_constraint WHERE conname = %s",
                ["asyncjobs_job_status_valid"],
            )
            row = cursor.fetchone()
            return None if row is None else row[0]
        found = connection.introspection.get_constraints(cursor, "asyncjobs_job")
    return True if "asyncjobs_job_status_valid" in found else None


def test_dependencies_migration_back_and_forward_keeps_jobs_and_the_status_check():
    """0010 (dependencies, the waiting status) and back, on a table holding jobs: they are
    kept; the status check allows waiting after it. PostgreSQL: validated after NOT VALID;
    MariaDB: dropped, not added again (adding a CHECK rebuilds the table there)."""
    from asyncjobs.models import JobDependency

    parent = tasks.add.enqueue(1, 2)
    child = tasks.noop.using(depends_on=[parent]).enqueue()
    assert JobDependency.objects.count() == 1
    expected = None if connection.vendor == "mysql" else True
    assert _status_check() is expected
    JobDependency.objects.all().delete()
    from asyncjobs.models import Job

    Job.objects.filter(pk=child.id).delete()
    call_command("migrate", "asyncjobs", "0009", verbosity=0)
    assert "asyncjobs_jobdependency" not in _tables()
    assert _status_check() is expected
    call_command("migrate", verbosity=0)
    assert _status_check() is expected
    assert "asyncjobs_jobdependency" in _tables()
    # The jobs survived both ways, and dependencies work again.
    waiting = tasks.noop.using(depends_on=[parent]).enqueue()
    assert Job.objects.get(pk=waiting.id).status == JobStatus.WAITING
    if connection.vendor != "mysql":
        from django.db import IntegrityError, transaction

        with pytest.raises(IntegrityError), transaction.atomic():
            Job.objects.filter(pk=parent.id).update(status="bogus")


def test_the_every_queue_claim_index_is_there_after_migrating_back_and_forward():
    """0013's partial index of ready jobs in claim order, built online; none on MariaDB/MySQL,
    where 0008's asyncjobs_job_claim_all_m stands in (and stays)."""
    for _ in range(2):
        found = _index("asyncjobs_job_claim_all")
        if connection.vendor == "mysql":
            assert found == []
            assert [c.lower() for c in _index("asyncjobs_job_claim_all_m")][:3] == [
                "status",
                "limit_key",
                "priority",
            ]
        else:
            (definition,) = found
            normalised = definition.replace('"', "").replace(" ", "").lower()
            assert "(priorityDESC,run_after,enqueued_at)".lower() in normalised
            condition = normalised.split("where", 1)[1]
            for part in ("status", "queued", "limit_key"):
                assert part in condition
        call_command("migrate", "asyncjobs", "0012", verbosity=0)
        assert _index("asyncjobs_job_claim_all") == []
        call_command("migrate", verbosity=0)


def test_a_worker_serving_every_queue_claims_before_0013_is_applied():
    """New code started before ``migrate`` (or after a migration back): the every-queue claim
    works without its index, only slower (SQLite names the index only where it exists)."""
    call_command("migrate", "asyncjobs", "0012", verbosity=0)
    try:
        queued = tasks.noop.using(queue_name="emails").enqueue()
        now = timezone.now()
        (job,) = db.for_alias("default").claim(
            queues=None, limit=10, worker_id="w", now=now, lease=timedelta(minutes=5)
        )
        assert str(job.pk) == queued.id
    finally:
        call_command("migrate", verbosity=0)
