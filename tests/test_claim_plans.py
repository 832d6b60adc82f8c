"""The claim's reads as the database plans them, with a backlog of ready jobs in several
queues: each reads a claim index in claim order and stops at its limit; none sorts every
ready job (a worker of every queue did, before the every-queue claim index). On PostgreSQL
under a generic plan, as the prepared claim may run (asyncjobs/db/postgresql.py)."""

import json
import re
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from asyncjobs import db
from asyncjobs.models import Job
from tests.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

READY = 20_000
QUEUES = ["default", "emails", "low", "other", "reports", "partner"]

# One statement per database: READY ready jobs spread over the queues and priorities.
BACKLOG_SQL = {
    "postgresql": """
        INSERT INTO asyncjobs_job (id, backend, task_path, args, kwargs, queue_name, priority,
            status, enqueued_at, run_after, attempts, max_attempts, free_attempts, backoff,
            retry_on, fail_on, last_error_class, last_error_message, worker_id, webhook_url,
            limit_key, limit_rate)
        SELECT gen_random_uuid(), 'default', 'tests.tasks.add', '[]', '{}',
            (%(queues)s::text[])[1 + g %% %(count)s], (g * 7919) %% 21 - 10, 'queued',
            now() - (g || ' ms')::interval, now() - ((g * 31) %% 100000 || ' ms')::interval,
            0, 1, 0, '{}', '[]', '[]', '', '', '', '', '', ''
        FROM generate_series(1, %(ready)s) AS g
    """,
    "sqlite": """
        WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %(ready)s)
        INSERT INTO asyncjobs_job (id, backend, task_path, args, kwargs, queue_name, priority,
            status, enqueued_at, run_after, attempts, max_attempts, free_attempts, backoff,
            retry_on, fail_on, last_error_class, last_error_message, worker_id, webhook_url,
            limit_key, limit_rate)
        SELECT lower(hex(randomblob(16))), 'default', 'tests.tasks.add', '[]', '{}',
            json_extract(%(queues)s, '$[' || (i %% %(count)s) || ']'), (i * 7919) %% 21 - 10,
            'queued', datetime('now', '-' || i || ' seconds'),
            datetime('now', '-' || ((i * 31) %% 100000) || ' seconds'),
            0, 1, 0, '{}', '[]', '[]', '', '', '', '', '', ''
        FROM g
    """,
}


@pytest.fixture
def backlog():
    """READY ready jobs in QUEUES, the statistics up to date."""
    if connection.vendor not in BACKLOG_SQL:
        pytest.skip("PostgreSQL and SQLite (MariaDB names its index: FORCE INDEX)")
    queues = QUEUES if connection.vendor == "postgresql" else json.dumps(QUEUES)
    with connection.cursor() as cursor:
        cursor.execute(
            BACKLOG_SQL[connection.vendor],
            {"queues": queues, "count": len(QUEUES), "ready": READY},
        )
        cursor.execute("ANALYZE asyncjobs_job" if connection.vendor == "postgresql" else "ANALYZE")
    assert Job.objects.filter(status="queued").count() == READY


def _nodes(plan):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _generic_plan(sql, params):
    """The nodes of PostgreSQL's generic plan of ``sql`` (its ``%(name)s`` parameters
    numbered in order), run with ``params``."""
    names = []

    def number(match):
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", number, sql)
    # In one transaction: one server connection behind a transaction pooler too.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE claim_plan AS {numbered}")
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) EXECUTE claim_plan({', '.join(['%s'] * len(names))})",
            [params[name] for name in names],
        )
        (found,) = cursor.fetchone()
        cursor.execute("DEALLOCATE claim_plan")
    return list(_nodes((json.loads(found) if isinstance(found, str) else found)[0]["Plan"]))


@pytest.mark.postgres
@pytest.mark.parametrize("queues", [None, ["emails"], QUEUES[:4]], ids=["every", "one", "some"])
def test_the_prepared_claim_reads_a_claim_index_in_order(backlog, queues):
    from asyncjobs.db.postgresql import _start_sql

    sql = _start_sql(connection, "pick_every_queue" if queues is None else "pick_queues")
    now = timezone.now()
    params = {
        "queues": queues,
        "limit": 10,
        "worker": "w",
        "lease": now + timedelta(seconds=30),
        "now": now,
    }
    nodes = _generic_plan(sql, params)
    indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
    expected = "asyncjobs_job_claim_all" if queues is None else "asyncjobs_job_claim"
    # The picked jobs are then looked up by their key (the start statement's UPDATE).
    assert indexes == {expected, "asyncjobs_job_pkey"}
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    sorts = [n for n in nodes if n["Node Type"] == "Sort"]
    if queues is None:
        assert sorts == []
    else:  # the best of each queue's first rows (LATERAL), not every ready job
        assert [n["Plans"][0]["Node Type"] for n in sorts] == ["Nested Loop"]
    claimed = db.for_alias("default").claim(
        queues=queues, limit=10, worker_id="w", now=now, lease=timedelta(seconds=30)
    )
    assert len(claimed) == 10


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "queues",
    [None, ["emails"], QUEUES[:4], ["nothing-here", "nor-here"]],
    ids=["every", "one", "some", "empty"],
)
def test_the_sqlite_claim_reads_a_claim_index_in_order(backlog, queues):
    with CaptureQueriesContext(connection) as captured:
        db.for_alias("default").claim(
            queues=queues,
            limit=10,
            worker_id="w",
            now=timezone.now(),
            lease=timedelta(seconds=30),
        )
    (pick,) = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT id")]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {pick}")
        plan = [row[-1] for row in cursor.fetchall()]
    if queues is None:
        assert plan == ["SCAN asyncjobs_job USING INDEX asyncjobs_job_claim_all"]
    else:
        # Several queues: the claim index queue by queue; SQLite keeps the best LIMIT rows.
        assert plan[0] == "SEARCH asyncjobs_job USING INDEX asyncjobs_job_claim (queue_name=?)"


# --- generic plans for a worker's claims (asyncjobs.db.postgresql.GenericPlans) ---------------


def _worker_claim(limit=1):
    """A claim as a worker makes it (its strategy claims on its own threads' connections)."""
    strategy = db.for_alias("default")
    strategy.worker_connections = True
    return strategy.claim(
        queues=None, limit=limit, worker_id="w", now=timezone.now(), lease=timedelta(seconds=30)
    )


def _claim_statements():
    """This connection's prepared claim statements: (name, generic plans, custom plans)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            ["%picked AS%"],
        )
        return cursor.fetchall()


def _prepared_plan(name):
    """The scans of the plan the prepared claim ``name`` runs now (pick_every_queue: limit,
    worker, lease, now)."""
    now = timezone.now()
    # (Not in a transaction: psycopg drops every prepared statement at a ROLLBACK.)
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) EXECUTE {name}(%s, %s, %s, %s)",
            [1, "w", now + timedelta(seconds=30), now],
        )
        (found,) = cursor.fetchone()
    nodes = _nodes((json.loads(found) if isinstance(found, str) else found)[0]["Plan"])
    return {(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]}


@pytest.fixture
def prepared_claims():
    """Prepared claims on the test's connection (as on a worker's: PostgreSQL, psycopg 3, the
    fast path on, not behind a pooler), and that connection's session as it was after."""
    from asyncjobs.db.postgresql import GenericPlans

    if not GenericPlans.applies(connection):
        pytest.skip("prepared claims on psycopg 3, not behind a transaction pooler")
    # No claim counts as slow unless a test says so (a loaded machine's would drop the plans).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GenericPlans, "STALE_AFTER", 3600.0)
        yield GenericPlans
    connection.close()  # (its session holds plan_cache_mode and the prepared statements)


@pytest.mark.postgres
def test_a_workers_claims_run_on_generic_plans(prepared_claims):
    for _ in range(3):
        add.enqueue(1, 2)
    for _ in range(3):
        assert len(_worker_claim()) == 1
    ((_, generic, custom),) = _claim_statements()
    # Planned once (three runs of one generic plan): no planning on each claim.
    assert (generic, custom) == (3, 0)


@pytest.mark.postgres
def test_other_claims_keep_their_custom_plans(prepared_claims):
    for _ in range(2):
        add.enqueue(1, 2)
    for _ in range(2):
        assert (
            len(
                db.for_alias("default").claim(
                    queues=None, limit=1, worker_id="w", now=timezone.now(), lease=timedelta(30)
                )
            )
            == 1
        )
    ((_, generic, custom),) = _claim_statements()
    assert (generic, custom) == (0, 2)


@pytest.mark.postgres
def test_a_projects_own_prepare_threshold_keeps_custom_plans(prepared_claims):
    connection.ensure_connection()
    connection.connection.prepare_threshold = 5  # as OPTIONS["prepare_threshold"] sets it
    assert not prepared_claims.applies(connection)
    add.enqueue(1, 2)
    assert len(_worker_claim()) == 1
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "auto"


@pytest.mark.postgres
def test_pooled_connections_keep_custom_plans(prepared_claims):
    """Django's pool hands a worker's connections on to its slot threads, whose task code
    must not find the session planning generically."""
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["pool"] = True
    try:
        assert not prepared_claims.applies(connection)
    finally:
        del options["pool"]  # (before anything reconnects: Django's pool needs CONN_MAX_AGE 0)


@pytest.mark.postgres
def test_server_side_binding_keeps_custom_plans(prepared_claims):
    """Django's own queries bound on the server would plan generically too: ``status = $1``
    cannot use the partial indexes of running or ready jobs."""
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["server_side_binding"] = True
    try:
        assert not prepared_claims.applies(connection)
    finally:
        del options["server_side_binding"]


def _plan_cache_mode():
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_generic_mode_is_set_outside_a_transaction_only(prepared_claims):
    """A first claim inside a transaction that then rolls back (a limited queue's claim
    runs in one) would take the session's SET with it: the mode waits for a claim outside."""
    for _ in range(2):
        add.enqueue(1, 2)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert len(_worker_claim()) == 1
        raise RuntimeError("rolled back")
    assert _plan_cache_mode() == "auto"
    assert len(_worker_claim()) == 1
    assert _plan_cache_mode() == "force_generic_plan"


@pytest.fixture
def stale_plan(prepared_claims):
    """A worker's claim planned generically on a nearly empty table (a sequential read),
    then READY jobs added without an ANALYZE: the plan's name."""
    with connection.cursor() as cursor:
        # (No autovacuum meanwhile: its ANALYZE would make the plans again by itself.)
        cursor.execute("ALTER TABLE asyncjobs_job SET (autovacuum_enabled = false)")
        cursor.execute("VACUUM ANALYZE asyncjobs_job")
    try:
        add.enqueue(1, 2)
        assert len(_worker_claim()) == 1
        ((name, _, _),) = _claim_statements()
        assert ("Seq Scan", None) in _prepared_plan(name)
        with connection.cursor() as cursor:
            cursor.execute(
                BACKLOG_SQL["postgresql"], {"queues": QUEUES, "count": len(QUEUES), "ready": READY}
            )
        assert len(_worker_claim()) == 1
        # Still the plan of the empty table: no ANALYZE since, and no claim was slow.
        assert ("Seq Scan", None) in _prepared_plan(name)
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE asyncjobs_job RESET (autovacuum_enabled)")


def _made_again(name):
    """After one more worker's claim: the same statement, still prepared (psycopg's list and
    the server's agree, whatever psycopg's version), now on the claim index."""
    assert len(_worker_claim()) == 1
    ((again, _, custom),) = _claim_statements()
    assert again == name and custom == 0
    scans = _prepared_plan(name)
    assert ("Index Scan", "asyncjobs_job_claim_all") in scans
    assert ("Seq Scan", None) not in scans
    # And it goes on running (no "prepared statement does not exist").
    assert len(_worker_claim()) == 1


@pytest.mark.postgres
def test_a_stale_generic_plan_is_made_again_after_a_slow_claim(
    stale_plan, prepared_claims, monkeypatch
):
    """A generic plan made on a nearly empty table reads it sequentially, which a burst of
    jobs makes slow until the next ANALYZE: a slow claim has the plan made again, from the
    table as it is then."""
    # Whatever this machine's speed, this claim counts as slow.
    monkeypatch.setattr(prepared_claims, "STALE_AFTER", 0.0)
    monkeypatch.setattr(prepared_claims, "MIN_REPLAN_GAP", 0.0)
    assert len(_worker_claim()) == 1  # slow: the plans are dropped after it
    monkeypatch.setattr(prepared_claims, "STALE_AFTER", 3600.0)
    _made_again(stale_plan)


@pytest.mark.postgres
def test_generic_plans_are_made_again_every_so_often(stale_plan, prepared_claims, monkeypatch):
    monkeypatch.setattr(prepared_claims, "REPLAN_EVERY", 0.0)
    _made_again(stale_plan)
