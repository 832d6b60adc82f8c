"""Conformance of the vendor strategies in asyncjobs.db: both must pass every test here
unless it is marked for one vendor."""

import itertools
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, connections, models, transaction
from django.db.models.signals import post_init
from django.utils import timezone

from asyncjobs import db, enqueue_many, services
from asyncjobs.db import fastpath
from asyncjobs.models import Attempt, Job, JobStatus
from asyncjobs.tasks_api import task_backends
from tests import tasks
from tests.conftest import in_thread

pytestmark = pytest.mark.django_db(transaction=True)
LEASE = timedelta(seconds=30)


@pytest.fixture
def strategy():
    return db.for_alias("default")


def test_claim_moves_ready_jobs_to_running_best_first(strategy):
    now = timezone.now()
    low = tasks.add.using(priority=-1).enqueue(1, 1)
    high = tasks.add.using(priority=5).enqueue(1, 1)
    later = tasks.add.using(run_after=now + timedelta(hours=1)).enqueue(1, 1)
    jobs = strategy.claim(queues=["default"], limit=10, worker_id="w1", now=now, lease=LEASE)
    assert [str(j.pk) for j in jobs] == [high.id, low.id]
    for job in jobs:
        assert job.status == JobStatus.RUNNING
        assert job.worker_id == "w1"
        assert job.attempts == 1
        assert job.lease_expires_at == now + LEASE
        assert job.started_at == job.last_attempted_at == now
        assert isinstance(job.args, list) and job.args == [1, 1]
        assert job.timeout is None or isinstance(job.timeout, timedelta)
    stored = Job.objects.get(pk=high.id)
    assert (stored.status, stored.worker_id, stored.attempts) == (JobStatus.RUNNING, "w1", 1)
    assert Attempt.objects.filter(worker_id="w1", finished_at__isnull=True).count() == 2
    assert Job.objects.get(pk=later.id).status == JobStatus.SCHEDULED
    assert strategy.claim(queues=["default"], limit=10, worker_id="w2", now=now, lease=LEASE) == []


@pytest.mark.parametrize("listen", [False, True], ids=["direct", "through-init"])
def test_claimed_jobs_hold_what_the_orm_loads(strategy, listen):
    """Claimed jobs are built from the RETURNING rows directly (or by Model.from_db when a
    project listens to post_init); either way they hold what a SELECT through the ORM gives,
    empty and non-empty JSON included."""
    now = timezone.now()
    tasks.add.enqueue(1, 2)
    tasks.fail_always.enqueue(message={"ü": [1.5, None, True], "empty": {}, "none": []})
    tasks.send_welcome_email.enqueue(7)
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    if listen:
        post_init.connect(receiver, sender=Job)
    try:
        jobs = strategy.claim(queues=None, limit=10, worker_id="w1", now=now, lease=LEASE)
    finally:
        post_init.disconnect(receiver, sender=Job)
    assert len(jobs) == 3
    assert {id(j) for j in seen} == ({id(j) for j in jobs} if listen else set())
    for job in jobs:
        assert not job._state.adding
        assert job._state.db == "default"
        loaded = Job.objects.get(pk=job.pk)
        for f in Job._meta.concrete_fields:
            mine, theirs = getattr(job, f.attname), getattr(loaded, f.attname)
            assert mine == theirs and type(mine) is type(theirs), f.attname
            assert getattr(mine, "tzinfo", None) is getattr(theirs, "tzinfo", None), f.attname
        assert list(job.__dict__) == list(loaded.__dict__)
    # Decoded once per batch, but no two jobs share a list or dict.
    for a, b in itertools.combinations(jobs, 2):
        for f in Job._meta.concrete_fields:
            value = getattr(a, f.attname)
            if isinstance(value, list | dict):
                assert value is not getattr(b, f.attname), f.attname


@pytest.mark.psycopg3
def test_claim_loads_timestamps_with_psycopgs_own_loader_in_utc():
    """In UTC, psycopg's own timestamptz loader gives what Django's wrapper gives (the
    claim test above compares values and tzinfo); elsewhere Django's stays."""
    from psycopg import adapters, pq

    oid = 1184  # timestamptz
    connection.ensure_connection()
    with fastpath.bound_cursor(connection) as cursor:
        assert cursor.adapters.get_loader(oid, pq.Format.TEXT) is not adapters.get_loader(
            oid, pq.Format.TEXT
        )
        fastpath.load_timestamps_natively(cursor, connection)
        assert cursor.adapters.get_loader(oid, pq.Format.TEXT) is adapters.get_loader(
            oid, pq.Format.TEXT
        )
    with fastpath.bound_cursor(connection) as cursor:
        cursor.execute("SET TIME ZONE 'Europe/Paris'")
        try:
            fastpath.load_timestamps_natively(cursor, connection)
            assert cursor.adapters.get_loader(oid, pq.Format.TEXT) is not adapters.get_loader(
                oid, pq.Format.TEXT
            )
        finally:
            cursor.execute("SET TIME ZONE 'UTC'")


def test_claim_respects_limit_and_queues(strategy):
    now = timezone.now()
    enqueue_many([(tasks.add, (i, i), {}) for i in range(5)])
    tasks.send_welcome_email.enqueue(1)
    assert strategy.claim(queues=["low"], limit=10, worker_id="w", now=now, lease=LEASE) == []
    assert strategy.claim(queues=[], limit=10, worker_id="w", now=now, lease=LEASE) == []
    assert (
        len(strategy.claim(queues=["default"], limit=2, worker_id="w", now=now, lease=LEASE)) == 2
    )
    emails = strategy.claim(queues=["emails"], limit=10, worker_id="w", now=now, lease=LEASE)
    assert [j.queue_name for j in emails] == ["emails"]
    rest = strategy.claim(queues=None, limit=10, worker_id="w", now=now, lease=LEASE)
    assert len(rest) == 3


@pytest.mark.parametrize(
    "queues", [None, ["default", "emails", "low"]], ids=["every-queue", "named-queues"]
)
def test_a_claim_takes_the_best_jobs_across_queues(strategy, queues):
    """Priority first whatever the queue, then run_after, then enqueued_at: for a worker of
    every queue (its own index) as for one of several queues (an ordered read per queue)."""
    now = timezone.now()
    base = now - timedelta(minutes=10)
    made = []  # (job id, priority, run_after, enqueued_at)
    for queue, priority, run_after, enqueued_at in [
        ("low", 5, 30, 2),
        ("emails", 5, 30, 1),  # as the one above, but enqueued before it
        ("default", 5, 10, 9),  # the same priority, due sooner
        ("emails", 9, 60, 9),  # the best of all
        ("default", -3, 0, 0),
        ("low", 0, 50, 3),
        ("default", 0, 50, 2),
        ("emails", 0, 20, 4),
        ("low", -3, 0, 1),
    ]:
        job = tasks.add.using(queue_name=queue, priority=priority).enqueue(1, 1)
        at = (base + timedelta(seconds=run_after), base + timedelta(seconds=enqueued_at))
        Job.objects.filter(pk=job.id).update(run_after=at[0], enqueued_at=at[1])
        made.append((job.id, -priority, *at))
    tasks.add.using(queue_name="other", priority=50, run_after=now + timedelta(hours=1)).enqueue(
        1, 1
    )  # not due: never claimed
    claimed = []
    while got := strategy.claim(queues=queues, limit=2, worker_id="w", now=now, lease=LEASE):
        claimed += [str(j.pk) for j in got]
    assert claimed == [job_id for job_id, *_ in sorted(made, key=lambda m: m[1:])]


def test_second_attempt_number(strategy):
    now = timezone.now()
    result = tasks.add.enqueue(1, 1)
    Job.objects.filter(pk=result.id).update(attempts=2)
    (job,) = strategy.claim(queues=None, limit=1, worker_id="w", now=now, lease=LEASE)
    assert job.attempts == 3
    assert Attempt.objects.get(job_id=result.id).number == 3


def test_concurrent_claimers_never_share_a_job(strategy):
    enqueue_many([(tasks.add, (i, i), {}) for i in range(200)])
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name):
        def run():
            while True:
                jobs = db.for_alias("default").claim(
                    queues=None, limit=7, worker_id=name, now=timezone.now(), lease=LEASE
                )
                if not jobs:
                    return
                with lock:
                    claimed.extend(str(j.pk) for j in jobs)

        return run

    def target(name):
        try:
            claimer(name)()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(claimed) == 200
    assert len(set(claimed)) == 200
    assert Attempt.objects.count() == 200


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has no row locks")
def test_claim_skips_rows_locked_by_another_transaction(strategy):
    """Proves SKIP LOCKED on a second connection: a row locked elsewhere is neither claimed
    nor waited for."""
    first = tasks.add.using(priority=10).enqueue(1, 1)
    second = tasks.add.enqueue(2, 2)
    with transaction.atomic():
        Job.objects.select_for_update().get(pk=first.id)
        jobs = in_thread(
            lambda: db.for_alias("default").claim(
                queues=None, limit=10, worker_id="w", now=timezone.now(), lease=LEASE
            )
        )
    assert [str(j.pk) for j in jobs] == [second.id]


def test_maintenance_lock_is_exclusive(strategy):
    """One holder at a time: a lease row on PostgreSQL (another worker's strategy, on
    another connection here, is refused), or on SQLite a flock on a file beside the database
    (a second open of it, in another thread here, is refused as another process's would
    be)."""
    with strategy.maintenance_lock(now=timezone.now()) as won:
        assert won
        other = in_thread(lambda: _try_lock())
        assert other is False
    assert in_thread(lambda: _try_lock()) is True


def _try_lock():
    with db.for_alias("default").maintenance_lock(now=timezone.now()) as won:
        return won


@pytest.mark.sqlite
def test_sqlite_maintenance_lock_is_shared_without_flock(strategy, monkeypatch):
    """Without flock (Windows) every worker may do maintenance, as each step is
    conditional."""
    monkeypatch.setattr(db.sqlite, "fcntl", None)
    with strategy.maintenance_lock(now=timezone.now()) as won:
        assert won
        assert in_thread(lambda: _try_lock()) is True


def _synchronous_commit():
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [False, True], ids=["default", "DURABLE_CLAIMS"])
def test_a_claim_commits_without_waiting_for_its_flush_unless_durable(strategy, settings, durable):
    """A claim lost in a crash only means a re-run (at-least-once), so its transaction does
    not wait for the WAL flush, and only its own: the setting is transaction-local (safe
    behind a transaction pooler); enqueues and outcomes keep the server's."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "DURABLE_CLAIMS": durable}
    with connection.cursor() as cursor:
        # The session's own setting, whatever the server's default (the throwaway servers of
        # `make pg-versions` run with it off).
        cursor.execute("SET synchronous_commit TO on")
    try:
        _claims_and_outcomes(strategy, durable)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def _claims_and_outcomes(strategy, durable):
    server = _synchronous_commit()
    assert server == "on"
    tasks.add.enqueue(1, 1)
    tasks.per_account.enqueue("acme")
    with transaction.atomic():
        (job,) = strategy.claim(
            queues=["default"], limit=10, worker_id="w1", now=timezone.now(), lease=LEASE
        )
        assert _synchronous_commit() == ("on" if durable else "off")
    assert _synchronous_commit() == server
    keyed = Job.objects.exclude(limit_key="").get()
    with transaction.atomic():
        started = db.start_jobs(
            "default", [keyed.pk], worker_id="w1", now=timezone.now(), lease=LEASE
        )
        assert [j.pk for j in started] == [keyed.pk]
        assert _synchronous_commit() == ("on" if durable else "off")
    assert _synchronous_commit() == server
    services.record_successes(
        [services.Success(job, 3, timezone.now())], worker_id="w1", using="default"
    )
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    assert _synchronous_commit() == server


@pytest.mark.postgres
def test_listener_is_notified_on_commit_not_before(strategy):
    listener = strategy.listen()
    try:
        assert listener.wait(0.05) == []  # connects and listens
        with transaction.atomic():
            tasks.add.enqueue(1, 1)
            assert in_thread(lambda: listener.wait(0.3)) == []
        assert listener.wait(5) == ["ready:default"]
        # Bulk insert: one notification per queue.
        enqueue_many([(tasks.add.using(queue_name=q), (1, 1), {}) for q in ("default", "emails")])
        assert sorted(_notifications(listener)) == ["ready:default", "ready:emails"]
        # COPY fires the insert trigger too, for a large batch alike.
        enqueue_many([(tasks.add, (i, i), {}) for i in range(2 * db.COPY_CHUNK + 1)])
        assert _notifications(listener) == ["ready:default"]
        # Not yet due: nothing, until promoted (an update to queued notifies too).
        later = timezone.now() + timedelta(hours=1)
        tasks.add.using(run_after=later).enqueue(1, 1)
        assert listener.wait(0.3) == []
        services.promote_due(now=later, queues=None)
        assert listener.wait(5) == ["ready:default"]
    finally:
        listener.close()
    assert listener.wait(1) == []


def _notifications(listener):
    """Every notification pending (the first within 5 s)."""
    got = listener.wait(5)
    while more := listener.wait(0.2):
        got += more
    return got


@pytest.mark.postgres
def test_jobs_under_limits_and_queue_pauses_are_announced_as_such(strategy):
    """A ready job under a per-task or per-key limit is announced as keyed (a worker then
    looks for those jobs at once, not on a timer); a pause or resume as a queue change, at
    commit."""
    listener = strategy.listen()
    try:
        assert listener.wait(0.05) == []
        tasks.per_account.using(concurrency_key="acct-1").enqueue("a")
        assert listener.wait(5) == ["keyed:default"]
        enqueue_many([(tasks.per_account, ("a",), {}), (tasks.add, (1, 1), {})])
        assert sorted(_notifications(listener)) == ["keyed:default", "ready:default"]
        later = timezone.now() + timedelta(hours=1)
        tasks.per_account.using(run_after=later, queue_name="emails").enqueue("a")
        services.promote_due(now=later, queues=None)
        assert listener.wait(5) == ["keyed:emails"]
        with transaction.atomic():
            services.set_queue_paused("emails", True, now=timezone.now())
            assert in_thread(lambda: listener.wait(0.3)) == []
        assert listener.wait(5) == ["queue:emails"]
        services.set_queue_paused("emails", False, now=timezone.now())
        assert listener.wait(5) == ["queue:emails"]
    finally:
        listener.close()
    kinds = [db.notification_kind(p) for p in ("ready:a", "keyed:a:b", "queue:x", "a:b", "plain")]
    # (A bare queue name is what the triggers sent before migration 0004: a ready job.)
    assert kinds == ["ready", "keyed", "queue", "ready", "ready"]


def test_insert_jobs_stores_what_the_orm_would():
    """Batches (COPY on PostgreSQL, a cached INSERT run for each job on SQLite) and a single
    job (that INSERT) store every field exactly as ``save()`` does."""
    now = timezone.now()
    backend = task_backends["default"]
    task = tasks.add.using(priority=7, run_after=now + timedelta(hours=1))
    args, kwargs = (1, {"k": [1.5, "é", None]}), {"x": True}
    batch = [backend.build_job(task, args, kwargs, now) for _ in range(100)]
    with transaction.atomic():
        db.insert_jobs("default", batch)
    single = backend.build_job(task, args, kwargs, now)
    single.save(force_insert=True)  # the ORM's own INSERT, for reference
    one = backend.build_job(task, args, kwargs, now)
    db.insert_jobs("default", [one])  # the cached single-row INSERT
    few = [backend.build_job(task, args, kwargs, now) for _ in range(3)]
    with transaction.atomic():
        db.insert_jobs("default", few)  # the same INSERT, for each job

    def row(pk):
        return {k: v for k, v in Job.objects.filter(pk=pk).values().get().items() if k != "id"}

    assert row(batch[0].pk) == row(single.pk) == row(one.pk) == row(few[-1].pk)
    assert row(batch[-1].pk)["status"] == JobStatus.SCHEDULED
    assert Job.objects.count() == len(batch) + 5
    for job in (batch[0], one, *few):
        assert not job._state.adding and job._state.db == "default"


def test_a_copy_batch_of_several_tasks_stores_each_job_as_the_orm_would(django_user_model):
    """COPY formats the values jobs of one task share once; a batch that interleaves tasks,
    owners and awkward text must still store every job exactly as ``save()`` does."""
    now = timezone.now()
    backend = task_backends["default"]
    owner = django_user_model.objects.create(username="owner")
    text = "tab\there\nnew line \\ backslash \r é \\N"
    calls = [
        (tasks.add, (1, text), {}),
        (tasks.send_welcome_email, (7,), {}),
        (tasks.rated, (3,), {"extra": {text: [1.5, None, True]}}),
        (tasks.per_account.using(concurrency_key=text), ("a",), {}),
        (tasks.add.using(priority=-3, run_after=now + timedelta(days=1)), (), {}),
    ]
    batch, twins = [], []
    for i in range(2 * db.COPY_CHUNK + 10):  # (three of COPY's writes)
        task, args, kwargs = calls[i % len(calls)]
        with services.enqueued_by(owner if i % 2 else None):
            batch.append(backend.build_job(task, args, kwargs, now))
            if i < len(calls) * 2:
                twins.append(backend.build_job(task, args, kwargs, now))
    with transaction.atomic():
        db.insert_jobs("default", batch)
    for twin in twins:
        twin.save(force_insert=True)
    singles = []  # each by the single-job INSERT (JSON as text on PostgreSQL)
    for i, (task, args, kwargs) in enumerate(calls * 2):
        with services.enqueued_by(owner if i % 2 else None):
            singles.append(backend.build_job(task, args, kwargs, now))
        db.insert_jobs("default", singles[-1:])

    def row(pk):
        return {k: v for k, v in Job.objects.filter(pk=pk).values().get().items() if k != "id"}

    for job, twin, single in zip(batch, twins, singles, strict=False):
        assert row(job.pk) == row(twin.pk) == row(single.pk)
    assert Job.objects.count() == len(batch) + len(twins) + len(singles)


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.psycopg3
def test_the_claim_and_the_single_insert_run_prepared_unless_pooled(strategy, settings):
    """On a direct connection the hot statements are prepared on the server once, and
    nothing else is (Django's own queries stay unprepared); after a DISCARD ALL (a pool's
    reset) they are prepared again rather than called by a name the server forgot. Behind
    a transaction pooler nothing is prepared."""
    from asyncjobs.db import postgresql

    if postgresql.pooled("default"):
        pytest.skip("through a transaction pooler (the second half below is this run)")
    now = timezone.now()
    claim = {"queues": None, "worker_id": "w", "lease": timedelta(minutes=1)}
    connection.close()
    for _ in range(3):
        tasks.add.enqueue(1, 2)
        Job.objects.filter(status=JobStatus.QUEUED).count()
        assert len(strategy.claim(limit=1, now=now, **claim)) == 1
    prepared = _prepared_statements()
    assert len(prepared) == 2
    assert prepared[0].startswith('INSERT INTO "asyncjobs_job"')
    assert prepared[1].startswith("WITH picked AS (")
    with connection.cursor() as cursor:
        cursor.execute("DISCARD ALL")
    assert _prepared_statements() == []
    tasks.add.enqueue(1, 2)
    assert len(strategy.claim(limit=1, now=now, **claim)) == 1
    assert len(_prepared_statements()) == 2

    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "POOL_MODE": "transaction"}
    connection.close()
    tasks.add.enqueue(1, 2)
    assert len(strategy.claim(limit=1, now=now, **claim)) == 1
    assert _prepared_statements() == []
    assert Job.objects.filter(status=JobStatus.RUNNING).count() == 5


@pytest.mark.psycopg3
def test_claims_keep_one_reading_cursor_per_connection(strategy):
    """The claim's psycopg cursor is kept per connection too, apart from the single INSERT's
    (whose adapters stay psycopg's defaults), with the timestamp loader set up once."""
    from psycopg import adapters, pq

    wrapper = connections["default"]
    oid = 1184  # timestamptz
    for _ in range(3):
        tasks.add.enqueue(1, 2)
    now = timezone.now()
    claimed = strategy.claim(
        queues=None, limit=1, worker_id="w", now=now, lease=timedelta(seconds=30)
    )
    reader = fastpath.KEPT_READERS[wrapper]
    assert reader is not fastpath.KEPT_CURSORS[wrapper]
    assert reader.adapters.get_loader(oid, pq.Format.TEXT) is adapters.get_loader(
        oid, pq.Format.TEXT
    )
    assert fastpath.KEPT_CURSORS[wrapper].adapters.get_loader(
        oid, pq.Format.TEXT
    ) is not adapters.get_loader(oid, pq.Format.TEXT)
    again = strategy.claim(queues=None, limit=2, worker_id="w", now=now, lease=timedelta(30))
    assert fastpath.KEPT_READERS[wrapper] is reader
    assert len(claimed) == 1 and len(again) == 2
    assert {job.started_at for job in [*claimed, *again]} == {now}
    assert all(job.started_at.tzinfo is not None for job in [*claimed, *again])


@pytest.mark.psycopg3
def test_single_inserts_keep_one_cursor_per_connection():
    """The single-job INSERT reuses its psycopg cursor while Django's connection holds the
    same psycopg connection; a use inside another, a failed statement and a new connection
    are all handled."""
    wrapper = connections["default"]  # (``connection`` is a proxy to it)
    tasks.add.enqueue(1, 2)
    kept = fastpath.KEPT_CURSORS[wrapper]
    tasks.add.enqueue(1, 2)
    assert fastpath.KEPT_CURSORS[wrapper] is kept
    with fastpath.bound_cursor(wrapper, keep=True) as outer:
        assert outer is kept
        with fastpath.bound_cursor(wrapper, keep=True) as inner:
            assert inner is not outer
            inner.execute("SELECT 1")
    assert fastpath.KEPT_CURSORS[wrapper] is kept and not kept.closed
    with fastpath.bound_cursor(wrapper) as fresh:
        assert fresh is not kept
    assert fresh.closed and fastpath.KEPT_CURSORS[wrapper] is kept
    job = task_backends["default"].build_job(tasks.add, (1, 2), {}, timezone.now())
    db.insert_jobs("default", [job])
    twin = task_backends["default"].build_job(tasks.add, (1, 2), {}, timezone.now())
    twin.id = job.id
    with pytest.raises(IntegrityError):
        db.insert_jobs("default", [twin])
    tasks.add.enqueue(1, 2)  # the same cursor, still usable
    assert fastpath.KEPT_CURSORS[wrapper] is kept
    wrapper.close()
    tasks.add.enqueue(1, 2)  # a new psycopg connection: a new cursor
    assert fastpath.KEPT_CURSORS[wrapper] is not kept
    assert Job.objects.count() == 5


def test_jobs_are_built_by_the_models_init_when_a_project_listens_to_it():
    """Without receivers, build_job fills a Job's state directly; with a pre_init or
    post_init receiver for Job, the model's init runs so that the receiver sees the job."""
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    now = timezone.now()
    backend = task_backends["default"]
    direct = backend.build_job(tasks.add, (1, 2), {}, now)
    post_init.connect(receiver, sender=Job)
    try:
        through_init = backend.build_job(tasks.add, (1, 2), {}, now)
    finally:
        post_init.disconnect(receiver, sender=Job)
    assert seen == [through_init]
    assert through_init._state.adding and direct._state.adding
    assert direct._state.db is through_init._state.db is None
    for f in Job._meta.concrete_fields:
        if f.attname != "id":
            assert getattr(direct, f.attname) == getattr(through_init, f.attname), f.attname
    assert list(direct.__dict__) == list(through_init.__dict__)


@pytest.mark.parametrize(
    "make",
    [
        lambda now: (tasks.add, (1, 2), {}),
        lambda now: (tasks.add.using(priority=-3, run_after=now + timedelta(days=1)), (), {}),
        lambda now: (tasks.send_welcome_email, (7,), {}),  # a queue, a timeout, priority
        lambda now: (tasks.unique_for_a_minute, (5,), {}),  # a unique key kept for a while
        lambda now: (tasks.per_account.using(concurrency_key="acct-1"), ("a",), {}),
        lambda now: (tasks.rated, (3,), {"extra": {"ü": [1.5, None, True]}}),
    ],
    ids=["plain", "scheduled", "options", "unique", "keyed", "rated-kwargs"],
)
def test_new_jobs_are_built_and_prepared_as_the_orm_would(make, django_user_model):
    """``build_job`` constructs jobs positionally and ``insert_jobs`` prepares plain values
    without the ORM's per-field calls; both must match the ORM's own way exactly."""
    now = timezone.now()
    task, args, kwargs = make(now)
    user = django_user_model.objects.create(username="owner")
    with services.enqueued_by(user):
        job = task_backends["default"].build_job(task, args, kwargs, now)
    # What build_job sets; every other field must hold the model's default.
    given = {
        "id", "backend", "task_path", "args", "kwargs", "queue_name", "priority", "status",
        "enqueued_at", "run_after", "max_attempts", "backoff", "retry_on", "fail_on",
        "timeout", "webhook_url", "unique_key", "unique_for", "limit_key",
        "limit_concurrency", "limit_rate", "enqueued_by_id", "task_overrides",
    }  # fmt: skip
    by_keyword = Job(**{name: getattr(job, name) for name in given})
    for f in Job._meta.concrete_fields:
        assert getattr(job, f.attname) == getattr(by_keyword, f.attname), f.attname
    orm_row = [
        f.get_db_prep_save(f.pre_save(by_keyword, True), connection)
        for f in Job._meta.concrete_fields
    ]

    def comparable(row):
        """Values with their types; what the ORM wraps for psycopg, unwrapped. On
        PostgreSQL ``fastpath.row`` gives lists and dicts of JSON fields as their text, and
        integers unwrapped (the columns decide the types): those compare by value."""
        values = []
        for f, v in zip(Job._meta.concrete_fields, row, strict=True):
            if connection.vendor == "postgresql" and isinstance(f, models.JSONField):
                # (psycopg 3's Jsonb keeps the value as ``obj``, psycopg2's Json as ``adapted``)
                v = json.loads(v) if type(v) is str else getattr(v, "obj", v)
                v = getattr(v, "adapted", v)
            elif connection.vendor == "postgresql" and isinstance(v, int) and type(v) is not bool:
                v = int(v)
            values.append((type(v), v))
        return values

    assert comparable(fastpath.row(job, connection)) == comparable(orm_row)
    assert job.enqueued_by_id == user.pk and job.enqueued_by == user


def test_promote_due_moves_due_jobs_and_tells_when_the_next_is_due():
    now = timezone.now()
    first, soon, later = (now + timedelta(minutes=m) for m in (1, 2, 5))
    due = tasks.add.using(run_after=first).enqueue(1, 1)
    tasks.add.using(run_after=later).enqueue(1, 1)
    tasks.send_welcome_email.using(run_after=soon).enqueue(1)  # queue "emails"
    assert Job.objects.get(pk=due.id).status == JobStatus.SCHEDULED
    assert services.promote_due(now=first, queues=["default"]) == (1, later)
    assert Job.objects.get(pk=due.id).status == JobStatus.QUEUED
    assert services.promote_due(now=first, queues=["default", "emails"]) == (0, soon)
    assert services.promote_due(now=first, queues=None) == (0, soon)
    assert services.promote_due(now=first, queues=["low"]) == (0, None)
    assert services.promote_due(now=later, queues=["emails", "default"]) == (2, None)


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL notifies")
def test_listener_without_notify_just_sleeps(strategy):
    """SQLite and MariaDB/MySQL have no LISTEN/NOTIFY: workers poll."""
    assert not strategy.announces
    listener = strategy.listen()
    assert listener.wait(0.01) == []
    listener.close()


def test_vendor_helpers():
    assert db.vendor_supported("default")
    assert not db.is_sqlite_without_immediate("default")
    assert connection.vendor in {"sqlite", "postgresql", "mysql"}


def test_the_mysql_maintenance_lock_is_named_after_the_database_within_64_characters():
    """GET_LOCK names are server-wide: two databases on one server get two locks."""
    assert db.mysql_lock_name("shop") == "asyncjobs.maintenance.shop"
    assert db.mysql_lock_name("shop") != db.mysql_lock_name("shop_test")
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    assert len(db.mysql_lock_name(long_a)) <= 64
    assert db.mysql_lock_name(long_a) != db.mysql_lock_name(long_b)


@pytest.mark.mysql
def test_mysql_has_the_indexes_that_stand_in_for_partial_ones():
    """Migration 0007: ordered claim indexes led by the status, and a unique index on
    unique_key (Django skips the model's partial constraint there)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, Job._meta.db_table)
    assert found["asyncjobs_job_unique_key_m"]["unique"]
    assert found["asyncjobs_job_unique_key_m"]["columns"] == ["unique_key"]
    assert found["asyncjobs_job_claim_m"]["columns"][:3] == ["status", "limit_key", "queue_name"]
    assert found["asyncjobs_job_claim_all_m"]["columns"][:3] == [
        "status",
        "limit_key",
        "priority",
    ]


def test_unique_keys_are_unique_until_released():
    """A finished job's key is NULL, and any number of NULLs are allowed: the partial unique
    constraint on PostgreSQL and SQLite, a plain unique index on MariaDB/MySQL."""
    first = tasks.add.using(unique_key="k").enqueue(1, 1)

    def copy(unique_key):
        job = Job.objects.get(pk=first.id)
        job.pk, job.unique_key = uuid.uuid4(), unique_key
        job._state.adding = True
        job.save()

    with pytest.raises(IntegrityError), transaction.atomic():
        copy("k")
    Job.objects.filter(pk=first.id).update(unique_key=None, status=JobStatus.SUCCEEDED)
    copy(None)
    copy("k")
    assert Job.objects.filter(unique_key__isnull=True).count() == 2


@pytest.mark.mysql
def test_mysql_claim_from_several_queues_takes_the_best_of_all(strategy):
    """One ordered read per queue, then the best ``limit`` rows of them."""
    now = timezone.now()
    low = tasks.add.using(queue_name="low", priority=-5).enqueue(1, 1)
    best = tasks.add.using(queue_name="emails", priority=50).enqueue(2, 2)
    mid = tasks.add.using(queue_name="low", priority=10).enqueue(3, 3)
    jobs = strategy.claim(
        queues=["low", "emails", "low"], limit=2, worker_id="w", now=now, lease=LEASE
    )
    assert [str(j.pk) for j in jobs] == [best.id, mid.id]
    assert Job.objects.get(pk=low.id).status == JobStatus.QUEUED
    assert Attempt.objects.filter(job_id__in=[best.id, mid.id], worker_id="w").count() == 2


def test_estimated_row_count_is_the_servers_statistic():
    """The admin's unfiltered job list counts with it: PostgreSQL's reltuples, InnoDB's
    table_rows; SQLite keeps no such statistic."""
    enqueue_many([(tasks.add, (i, i), {}) for i in range(30)])
    if connection.vendor == "sqlite":
        assert db.estimated_row_count(Job, "default") is None
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "ANALYZE TABLE asyncjobs_job"
            if connection.vendor == "mysql"
            else "ANALYZE asyncjobs_job"
        )
        if connection.vendor == "mysql":
            cursor.fetchall()
            # InnoDB samples a few pages: on a small table that earlier tests filled and
            # emptied (rows not purged yet) its estimate can be far off, so the test
            # compares with the statistic itself rather than with a range.
            cursor.execute(
                "SELECT table_rows FROM information_schema.tables"
                " WHERE table_schema = DATABASE() AND table_name = 'asyncjobs_job'"
            )
            assert db.estimated_row_count(Job, "default") == cursor.fetchone()[0]
            return
    assert 15 <= db.estimated_row_count(Job, "default") <= 60


@pytest.mark.server
@pytest.mark.parametrize("queues", [["default"], None], ids=["one-queue", "every-queue"])
def test_a_claim_locks_only_the_jobs_it_takes(strategy, queues):
    """While a claim's transaction is open, another worker can claim every other ready job:
    the claim reads a claim index in order and stops at its limit (a sort of every ready
    job, as MariaDB would do without an index led by the status, locks them all)."""
    enqueue_many([(tasks.add, (i, i), {}) for i in range(10)])
    enqueue_many([(tasks.add.using(queue_name="emails"), (i, i), {}) for i in range(3)])
    now = timezone.now()
    with transaction.atomic():
        mine = strategy.claim(queues=queues, limit=2, worker_id="a", now=now, lease=LEASE)
        others = in_thread(
            lambda: db.for_alias("default").claim(
                queues=["default", "emails"], limit=100, worker_id="b", now=now, lease=LEASE
            )
        )
    assert len(mine) == 2
    assert len(others) == 11
    assert not {j.pk for j in mine} & {j.pk for j in others}
