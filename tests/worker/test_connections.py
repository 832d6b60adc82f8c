"""A worker's bound on its slots' database connections (``MAX_DB_CONNECTIONS``), and the
database refusing connections ("too many clients") as the infrastructure's state, not a job's
failure: the attempt is given back unspent, the worker backs off and says so once."""

import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import OperationalError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from asyncjobs import db, services
from asyncjobs.models import Attempt, AttemptOutcome, Job, JobStatus, Worker
from asyncjobs.worker.connections import ConnectionGate
from asyncjobs.worker.heartbeat import Heartbeat
from asyncjobs.worker.maintenance import Maintenance
from asyncjobs.worker.maintenance.pruner import Pruner
from asyncjobs.worker.maintenance.rescuer import Rescuer
from asyncjobs.worker.recovery import Refusals
from asyncjobs.worker.runner import Runner
from tests import tasks
from tests.conftest import wait_until
from tests.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


# --- the gate, in-process --------------------------------------------------------------------


def test_gate_holds_threads_to_its_limit_and_release_hands_permits_on():
    gate = ConnectionGate(2)
    wrappers = []
    lock = threading.Lock()
    queried = []
    go = threading.Event()
    errors = []

    def slot():
        try:
            gate.enter()
            with lock:
                wrappers.append(connections["default"])
            Execution.objects.count()  # opens this thread's connection, with a permit
            with lock:
                queried.append(1)
            go.wait(20)
            gate.release()
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=slot) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: len(queried) == 2 and gate.waits == 3, message="two connected, three waiting"
    )
    assert sum(w.connection is not None for w in wrappers) == 2
    go.set()
    for thread in threads:
        thread.join(20)
    assert not errors
    assert len(queried) == 5
    assert all(w.connection is None for w in wrappers)
    assert gate.permits("default")._value == 2  # every permit back


def test_gate_gives_the_permit_back_when_the_connection_fails():
    gate = ConnectionGate(1)
    failures = []

    def slot():
        gate.enter()
        conn = connections["default"]
        conn.settings_dict = {**conn.settings_dict, "NAME": "/nonexistent/dir/x.sqlite3"}
        if connection.vendor != "sqlite":
            conn.settings_dict["PORT"] = "1"  # nothing listens there
        try:
            conn.ensure_connection()
        except Exception as exc:
            failures.append(exc)
        finally:
            conn.connection = None

    thread = threading.Thread(target=slot)
    thread.start()
    thread.join(20)
    assert failures
    assert gate.permits("default").acquire(blocking=False)


def test_runner_gates_slots_only_past_the_bound(settings):
    assert Runner(concurrency=4).gate is None  # 4 <= the default 10: no bound needed
    assert Runner(concurrency=50).gate.limit == 10
    assert Runner(concurrency=50, max_connections=3).gate.limit == 3
    assert Runner(concurrency=50, max_connections=0).gate is None
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "MAX_DB_CONNECTIONS": None}
    assert Runner(concurrency=50).gate is None


# --- refusals: which errors --------------------------------------------------------------------


def test_refusals_are_recognised_from_each_vendor_and_nothing_else():
    assert db.is_too_many_connections(OperationalError(tasks.REFUSAL_MESSAGE))
    assert db.is_too_many_connections(
        OperationalError('FATAL:  too many connections for role "app"')
    )
    assert db.is_too_many_connections(OperationalError(1040, "Too many connections"))
    assert db.is_too_many_connections(OperationalError(1203, "User x already has more than ..."))
    assert not db.is_too_many_connections(OperationalError("server closed the connection"))
    # A task's own error is its own, whatever it says.
    assert not db.is_too_many_connections(RuntimeError("too many connections to the SMTP host"))


def test_refusals_back_off_and_log_once_per_interval(caplog):
    refusals = Refusals("w1", log_every=60)
    with caplog.at_level("WARNING", logger="asyncjobs.worker.recovery"):
        first = refusals.refused(OperationalError("too many clients already"), "claiming jobs")
        second = refusals.refused(OperationalError("too many clients already"), "claiming jobs")
    assert 0.4 <= first <= 0.6
    assert second > first  # doubling
    assert refusals.remaining() > 0
    assert refusals.total == 2
    logged = [r for r in caplog.records if "refuses new connections" in r.getMessage()]
    assert len(logged) == 1


# --- end to end --------------------------------------------------------------------------------


def _server_connections():
    """This database's connections other than the test's own (PostgreSQL, MariaDB/MySQL)."""
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()",
                [name],
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM information_schema.processlist WHERE db = %s "
                "AND id <> CONNECTION_ID()",
                [name],
            )
        return cursor.fetchone()[0]


@pytest.mark.slow
def test_worker_past_the_bound_runs_orm_tasks_on_few_connections(worker_process):
    results = [tasks.query_then_sleep.enqueue(f"bound-{i}", 0.3) for i in range(12)]
    worker = worker_process("--concurrency", "12", "--max-connections", "2")
    peak = [0]

    def done():
        if connection.vendor != "sqlite":
            peak[0] = max(peak[0], _server_connections())
        return Job.objects.filter(status=JobStatus.SUCCEEDED).count() == len(results)

    wait_until(done, timeout=60, message=f"jobs done:\n{worker.output()}")
    assert not Job.objects.filter(status=JobStatus.FAILED).exists()
    assert Execution.objects.count() == len(results)
    if connection.vendor != "sqlite":
        # 2 for the slots, 4 for the worker's own threads, 1 for LISTEN (PostgreSQL).
        assert 2 <= peak[0] <= 2 + 5, worker.output()
    assert "connections=2 per database for the slots" in worker.output()


@pytest.mark.slow
def test_refused_task_gives_its_attempt_back_unspent(worker_process):
    """A task meets "too many clients": its attempt is lost, not spent (max_attempts=1 and
    the job still succeeds), the worker backs off and logs it once for all five."""
    results = [tasks.refused_once.enqueue(f"refused-{i}") for i in range(5)]
    worker = worker_process("--concurrency", "5")
    wait_until(
        lambda: Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 5,
        timeout=60,
        message=f"jobs succeeded:\n{worker.output()}",
    )
    for result in results:
        job = Job.objects.get(pk=result.id)
        assert (job.attempts, job.free_attempts, job.max_attempts) == (2, 1, 1)
        first, second = Attempt.objects.filter(job=job).order_by("number")
        assert first.outcome == AttemptOutcome.LOST
        assert "too many clients" in first.error_message
        assert second.outcome == AttemptOutcome.SUCCEEDED
    output = worker.output()
    assert output.count("refuses new connections") == 1, output
    assert "Traceback" not in output


@pytest.fixture
def refused_user():
    """A database user the server refuses for a connection limit: a PostgreSQL role with
    CONNECTION LIMIT 0, or a MariaDB/MySQL user with MAX_USER_CONNECTIONS 1 whose one
    connection the fixture holds. Dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_refused"[-60:]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f'DROP ROLE IF EXISTS "{name}"')
            cursor.execute(f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 0')
            yield name
            cursor.execute(f'DROP ROLE IF EXISTS "{name}"')
            return
        name = name[-32:]
        cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        cursor.execute(f"CREATE USER '{name}'@'%' WITH MAX_USER_CONNECTIONS 1")
        cursor.execute(f"GRANT SELECT ON `{connection.settings_dict['NAME']}`.* TO '{name}'@'%'")
        settings = {**connection.settings_dict, "USER": name, "PASSWORD": ""}
        holder = type(connections["default"])(settings, "refusal-holder")
        holder.ensure_connection()
        try:
            yield name
        finally:
            holder.close()
            cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")


@pytest.mark.slow
@pytest.mark.server
def test_real_refusal_from_the_server_is_not_the_jobs_fault(worker_process, refused_user):
    result = tasks.connect_as.enqueue("real-refusal", refused_user)
    worker = worker_process("--concurrency", "2")
    wait_until(
        lambda: Job.objects.get(pk=result.id).status == JobStatus.SUCCEEDED,
        timeout=60,
        message=f"job succeeded:\n{worker.output()}",
    )
    job = Job.objects.get(pk=result.id)
    assert (job.attempts, job.free_attempts) == (2, 1)
    lost = Attempt.objects.get(job=job, number=1)
    assert lost.outcome == AttemptOutcome.LOST
    assert "connection" in lost.error_message.lower()
    assert worker.output().count("refuses new connections") == 1


@pytest.fixture
def refused_alias(refused_user, monkeypatch):
    """A database alias ("refused") that connects as ``refused_user``, and a function that
    lifts the refusal (the user may then connect, and write the tables)."""
    alias = "refused"
    # Django's test case checks each new connection against the aliases it listed when it
    # began (its patched ensure_connection holds the test case class): add this one.
    for cell in BaseDatabaseWrapper.ensure_connection.__closure__ or ():
        test_case = cell.cell_contents
        if isinstance(test_case, type) and hasattr(test_case, "databases"):
            monkeypatch.setattr(test_case, "databases", frozenset(test_case.databases) | {alias})
    connections.settings[alias] = {
        **connection.settings_dict,
        "USER": refused_user,
        "PASSWORD": "",
    }

    def lift():
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{refused_user}"')
                cursor.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{refused_user}"')
                cursor.execute(f'ALTER ROLE "{refused_user}" CONNECTION LIMIT -1')
            else:
                name = connection.settings_dict["NAME"]
                cursor.execute(f"GRANT ALL ON `{name}`.* TO '{refused_user}'@'%'")
                cursor.execute(f"ALTER USER '{refused_user}'@'%' WITH MAX_USER_CONNECTIONS 0")

    try:
        yield alias, lift
    finally:
        del connections.settings[alias]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f'DROP OWNED BY "{refused_user}"')


class SeenRefusals(Refusals):
    """The worker's ``Refusals``, noting what each refusal interrupted."""

    def __init__(self, worker_id):
        super().__init__(worker_id, log_every=3600)
        self.seen = set()

    def refused(self, error, what):
        self.seen.add(what)
        return super().refused(error, what)


class CountedRescuer(Rescuer):
    """The real Rescuer, counting the runs that got through."""

    runs = 0

    def run(self, *, now):
        done = super().run(now=now)
        self.runs += 1
        return done


@pytest.mark.slow
@pytest.mark.server
def test_heartbeat_and_maintenance_ride_out_a_refusing_database(settings, refused_alias, caplog):
    """The server refuses the heartbeat's and the maintenance thread's connections: both back
    off, the worker logs it once (no traceback, no line per tick), and both carry on when the
    server takes them again."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "MAINTENANCE_INTERVAL": timedelta(seconds=0.2)}
    alias, lift = refused_alias
    services.register_worker(
        worker_id="w-refused",
        queues=["*"],
        concurrency=1,
        backend="default",
        now=timezone.now(),
        using="default",
    )
    before = Worker.objects.get(pk="w-refused").last_heartbeat_at
    refusals = SeenRefusals("w-refused")
    # The heartbeat needs of the slots only their alias and the jobs they hold (none).
    slots = SimpleNamespace(alias=alias, held=lambda: (0, {}))
    heartbeat = Heartbeat(
        slots,
        worker_id="w-refused",
        interval=timedelta(seconds=0.05),
        lease=timedelta(seconds=60),
        refusals=refusals,
    )
    rescuer = CountedRescuer(alias)
    maintenance = Maintenance(
        db.for_alias(alias), [rescuer, Pruner(alias)], worker_id="w-refused", refusals=refusals
    )
    with caplog.at_level("INFO", logger="asyncjobs"):
        heartbeat.start()
        maintenance.start()
        try:
            wait_until(
                lambda: len(refusals.seen) >= 2 and refusals.total >= 4,
                timeout=60,
                message=f"refusals met by both threads: {refusals.seen}",
            )
            assert {"renewing leases", "taking the maintenance lock"} <= refusals.seen or (
                # (MariaDB's maintenance lock may be taken on a connection of its own)
                "renewing leases" in refusals.seen
                and any(what.startswith("running maintenance") for what in refusals.seen)
            ), refusals.seen
            lift()
            wait_until(
                lambda: Worker.objects.get(pk="w-refused").last_heartbeat_at > before,
                timeout=60,
                message="a heartbeat once the server takes connections again",
            )
            wait_until(lambda: rescuer.runs >= 1, timeout=60, message="a maintenance round")
            assert heartbeat._thread.is_alive() and maintenance._thread.is_alive()
        finally:
            heartbeat.stop()
            maintenance.stop()
            heartbeat._thread.join(30)
            maintenance._thread.join(30)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("asyncjobs")]
    refused = [m for m in messages if "refuses new connections" in m]
    assert len(refused) == 1, messages
    # No other line: no "heartbeat failed" per tick, no traceback.
    assert not [m for m in messages if m not in refused and "failed" in m], messages
    assert not [r for r in caplog.records if r.exc_info], messages
