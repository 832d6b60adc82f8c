"""asyncjobs' migrations both ways on the database under test: back to zero (on PostgreSQL
that drops the NOTIFY triggers and their functions, restoring 0001's functions on the way)
and forward again, ending with a schema that works as a fresh one does. The test database
itself is made by running them forward from zero, so that direction runs on every test run.
"""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
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


def _index(name, table="asyncjobs_job"):
    """An index of ``table``: its definition (PostgreSQL, SQLite) or its columns in order
    (MariaDB/MySQL); empty if there is none."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname = %s",
                [table, name],
            )
            return [row[0] for row in cursor.fetchall()]
        if connection.vendor == "mysql":
            cursor.execute(
                "SELECT column_name FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = %s "
                "AND index_name = %s ORDER BY seq_in_index",
                [table, name],
            )
            return [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = %s AND name = %s", [table, name]
        )
        return [row[0] for row in cursor.fetchall()]


def _single_column_indexes(table, column):
    """The names of the indexes of ``table`` on ``column`` alone (plain or partial)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return sorted(
        name
        for name, info in found.items()
        if info["index"] and not info["primary_key"] and info["columns"] == [column]
    )


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
        from django.db import transaction

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


# 0014: what each index was before it, and what it is after (issue 29, fewer index entries).
USER_INDEX_BEFORE = "asyncjobs_job_enqueued_by_id_dcef6ceb"  # Django's name for the field's


def _normalised(definition):
    return definition.replace('"', "").replace(" ", "").replace("(", "").replace(")", "").lower()


def _assert_0014_indexes():
    """The schema after 0014: partial indexes of jobs that have a user and of ended attempts
    (full ones on MariaDB/MySQL, renamed), no index of the attempt's job but the unique one."""
    assert _single_column_indexes("asyncjobs_job", "enqueued_by_id") == [
        "asyncjobs_job_enqueued_by"
    ]
    assert _single_column_indexes("asyncjobs_attempt", "finished_at") == ["asyncjobs_attempt_ended"]
    assert _single_column_indexes("asyncjobs_attempt", "job_id") == []
    if connection.vendor == "mysql":
        return
    (user,) = _index("asyncjobs_job_enqueued_by")
    assert "whereenqueued_by_idisnotnull" in _normalised(user)
    (ended,) = _index("asyncjobs_attempt_ended", "asyncjobs_attempt")
    assert "wherefinished_atisnotnull" in _normalised(ended)


def test_0014_makes_two_indexes_partial_and_drops_one_both_ways():
    """Back to 0013: the full indexes of the user and of the attempt's end, and (but on
    MariaDB/MySQL, where InnoDB's index for the foreign key is the unique one) the attempt's
    job's own index; forward again: 0014's. Jobs and attempts stay, and work."""
    result = tasks.add.enqueue(1, 2)
    _assert_0014_indexes()
    call_command("migrate", "asyncjobs", "0013", verbosity=0)
    assert _single_column_indexes("asyncjobs_job", "enqueued_by_id") == [USER_INDEX_BEFORE]
    assert _single_column_indexes("asyncjobs_attempt", "finished_at") == [
        "asyncjobs_attempt_finished"
    ]
    job_indexes = _single_column_indexes("asyncjobs_attempt", "job_id")
    assert job_indexes == (
        [] if connection.vendor == "mysql" else ["asyncjobs_attempt_job_id_c1a3fd43"]
    )
    call_command("migrate", verbosity=0)
    _assert_0014_indexes()
    (job,) = db.for_alias("default").claim(
        queues=["default"], limit=5, worker_id="w1", now=timezone.now(), lease=timedelta(seconds=30)
    )
    assert str(job.pk) == result.id
    assert job.attempt_set.get().number == 1


@pytest.mark.mysql
def test_0014_only_renames_the_indexes_on_mariadb():
    """MariaDB/MySQL have no partial index: the full ones are renamed, never rebuilt."""
    call_command("migrate", "asyncjobs", "0013", verbosity=0)
    for target in ("0014", "0013", "0014"):
        with CaptureQueriesContext(connection) as captured:
            call_command("migrate", "asyncjobs", target, verbosity=0)
        statements = [q["sql"] for q in captured.captured_queries]
        changes = [s for s in statements if s.split()[0].upper() in ("ALTER", "CREATE", "DROP")]
        assert len(changes) == 2, changes
        assert all("RENAME INDEX" in s for s in changes), changes
    _assert_0014_indexes()


def _user_index_valid():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid FROM pg_index "
            "WHERE indexrelid = 'asyncjobs_job_enqueued_by'::regclass"
        )
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_0014_builds_again_an_index_a_failed_concurrent_build_left_invalid():
    """A CREATE INDEX CONCURRENTLY that failed leaves an invalid index of the name: running
    the migration again drops it and builds the index (rather than failing on the name)."""
    call_command("migrate", "asyncjobs", "0013", verbosity=0)
    tasks.add.enqueue(1, 2)
    tasks.add.enqueue(1, 2)
    # (two jobs of one queue: a unique index on it cannot be built, and is left invalid)
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        cursor.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY asyncjobs_job_enqueued_by "
            "ON asyncjobs_job (queue_name)"
        )
    assert _user_index_valid() is False
    call_command("migrate", verbosity=0)
    _assert_0014_indexes()
    assert _user_index_valid() is True
