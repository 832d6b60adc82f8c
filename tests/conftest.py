import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, connections
from rest_framework.test import APIClient

from asyncjobs.db import fastpath, psycopg3
from asyncjobs.tasks_api import task_backends
from asyncjobs.worker.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config):
    import django

    from asyncjobs import db, tasks_api

    driver = "psycopg 3" if db.psycopg3() else "psycopg2"
    return [
        f"asyncjobs database: {os.environ.get('DATABASE_URL') or 'SQLite (default)'}",
        f"Django {django.get_version()}, tasks from {tasks_api.SOURCE}, PostgreSQL via {driver}",
        f"asyncjobs FAST_PATH: {db.fastpath.enabled()}",
    ]


# Fixtures that start other processes or a browser: their tests get the matching marker, so that
# ``make test-fast`` (``-m "not slow and not subprocess and not browser"``) leaves them out
# without each test having to say so.
MARKED_BY_FIXTURE = {
    "worker_process": "subprocess",
    "example_project": "subprocess",
    "browser": "browser",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in MARKED_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _vendor_markers(request):
    """``@pytest.mark.postgres`` / ``@pytest.mark.sqlite`` / ``@pytest.mark.mysql`` tests run on
    their vendor only; ``@pytest.mark.server`` tests on a database server with row locks
    (PostgreSQL, MariaDB/MySQL), not on SQLite; ``@pytest.mark.psycopg3`` ones (the fast
    path's psycopg internals) on PostgreSQL through psycopg 3 with the fast path on only."""
    vendor = connection.vendor
    if request.node.get_closest_marker("server") and vendor == "sqlite":
        pytest.skip("PostgreSQL and MariaDB/MySQL only")
    if request.node.get_closest_marker("postgres") and vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    if request.node.get_closest_marker("sqlite") and vendor != "sqlite":
        pytest.skip("SQLite only")
    if request.node.get_closest_marker("psycopg3") and (vendor != "postgresql" or not psycopg3()):
        pytest.skip("PostgreSQL on psycopg 3 only")
    if request.node.get_closest_marker("psycopg3") and not fastpath.enabled():
        pytest.skip("ASYNCJOBS['FAST_PATH'] only")
    if request.node.get_closest_marker("mysql") and vendor != "mysql":
        pytest.skip("MariaDB/MySQL only")


def wait_until(predicate, *, timeout=20.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def waiting_for_a_lock():
    """Whether a session of the test database waits for a row lock now (PostgreSQL or
    MariaDB). Poll it with ``interval`` of 0.2 s or more: InnoDB refreshes its transactions
    view only when it was not read for 0.1 s, so faster polling keeps reading a stale one."""
    from django.db import connections

    connection = connections["default"]
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute(
                "SELECT count(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
            )
        else:
            # (Inside a transaction the activity view is a snapshot unless cleared.)
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        return cursor.fetchone()[0] >= 1


def old_finished_jobs(count):
    """Store ``count`` jobs that succeeded 30 days ago, each with its attempt: a backlog
    past every default retention, for the pruning tests."""
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from asyncjobs.models import Attempt, Job, JobStatus

    old = timezone.now() - timedelta(days=30)
    jobs = [
        Job(
            id=uuid.uuid4(),
            task_path="tests.tasks.add",
            status=JobStatus.SUCCEEDED,
            enqueued_at=old,
            run_after=old,
            started_at=old,
            finished_at=old + timedelta(milliseconds=i),
            attempts=1,
        )
        for i in range(count)
    ]
    Job.objects.bulk_create(jobs, batch_size=500)
    Attempt.objects.bulk_create(
        [Attempt(job=j, number=1, worker_id="w", started_at=old) for j in jobs], batch_size=500
    )


def start_in_thread(fn):
    """Start ``fn`` in another thread (so on another database connection). Returns a function
    that waits for it (30 s at most) and returns its value or raises its exception."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()

    def outcome():
        thread.join(30)
        assert not thread.is_alive(), "thread did not finish"
        if "error" in box:
            raise box["error"]
        return box["value"]

    return outcome


def in_thread(fn):
    """Run ``fn`` in another thread (so on another database connection); return its value."""
    return start_in_thread(fn)()


def one_slot(backend, worker_id="w"):
    """The ``Slots`` of a worker of concurrency 1 that claims nothing ahead, not started."""
    from django.utils import timezone

    from asyncjobs.worker.executor import Executor
    from asyncjobs.worker.prefetch import Prefetch
    from asyncjobs.worker.slots import Slots

    return Slots(
        size=1,
        executor=Executor(backend, worker_id, clock=timezone.now),
        prefetch=Prefetch(slots=1, most=0),
        worker_id=worker_id,
        wake=threading.Event(),
        stopping=threading.Event(),
    )


@pytest.fixture
def worker_row():
    """Build a Worker row: ``worker_row("w1", heartbeat_age=timedelta(...), **fields)``."""
    from datetime import timedelta

    from django.utils import timezone

    from asyncjobs.models import Worker

    def build(worker_id, *, heartbeat_age=timedelta(0), **fields):
        now = timezone.now()
        values = {
            "hostname": "h",
            "pid": 1,
            "queues": ["default"],
            "concurrency": 2,
            "started_at": now,
            "last_heartbeat_at": now - heartbeat_age,
            **fields,
        }
        return Worker.objects.create(id=worker_id, **values)

    return build


@pytest.fixture
def backend():
    return task_backends["default"]


@pytest.fixture
def runner():
    """Build an in-process Runner (``run_once``/``drain``) with test-friendly defaults."""

    def build(**kwargs):
        kwargs.setdefault("concurrency", 10)
        return Runner(**kwargs)

    return build


class WorkerProcess:
    """A ``manage.py runworker`` subprocess against the test database."""

    def __init__(self, args, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runworker", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} did not exit within {timeout}s:\n{self.output()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def worker_process(tmp_path, django_db_blocker):
    """Start runworker subprocesses; every one is SIGKILLed at teardown if still running.

    Timings (``lease``, ``heartbeat``, ``maintenance``, ``poll`` in seconds) reach the
    subprocess through the environment that tests/settings.py reads.
    """
    started = []

    def start(*args, lease=60, heartbeat=10, maintenance=15, poll=0.2, extra_env=None):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(ROOT),
            "ASYNCJOBS_DB_NAME": connection.settings_dict["NAME"],
            "ASYNCJOBS_TEST_LEASE": str(lease),
            "ASYNCJOBS_TEST_HEARTBEAT": str(heartbeat),
            "ASYNCJOBS_TEST_MAINTENANCE": str(maintenance),
            "ASYNCJOBS_TEST_POLL": str(poll),
            "ASYNCJOBS_LOG": "INFO",
            **(extra_env or {}),
        }
        worker = WorkerProcess(list(args), env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


class Recorder(BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /fail 500, /missing 404, /slow sleeps past the client's
    timeout, /flaky 500 then 200, /throttled 429 with Retry-After, /redirect-metadata 302 to
    the cloud metadata address, /redirect-ok 302 to /ok; records every request."""

    def log_message(self, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        server = self.server
        server.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        path = self.path.split("?")[0]
        hits = sum(1 for r in server.requests if r["path"].split("?")[0] == path)
        if path == "/slow":
            time.sleep(3)
        status, headers = 200, {}
        if path in ("/fail",) or (path == "/flaky" and hits == 1):
            status = 500
        elif path == "/missing":
            status = 404
        elif path == "/throttled":
            status, headers = 429, {"Retry-After": "7"}
        elif path == "/redirect-metadata":
            status, headers = 302, {"Location": "http://169.254.169.254/latest/meta-data/"}
        elif path == "/redirect-ok":
            status, headers = 302, {"Location": "/ok"}
        payload = json.dumps({"path": path, "hits": hits}).encode()
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (an ephemeral port) in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests = []
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The API's rate limits and event-stream slots live in the cache: no test inherits
    another's counts."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def users(db):
    """anonymous (None), other, owner, staff (reads: ``view_job``), an operator with the job
    permissions, a client that creates callback jobs. tests/security/ has the full matrix,
    staff without permissions included."""

    def make(name, staff=False, perms=()):
        user = User.objects.create_user(name, password="pw", is_staff=staff)
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        return User.objects.get(pk=user.pk)  # fresh permission cache

    return {
        "anonymous": None,
        "other": make("other"),
        "owner": make("owner"),
        "staff": make("staff", staff=True, perms=("view_job",)),
        "operator": make(
            "operator", staff=True, perms=("retry_job", "cancel_job", "add_job", "view_job")
        ),
        "client": make("client", perms=("add_job",)),
    }


@pytest.fixture
def api():
    """An APIClient per user (``api(user)``; ``api(None)`` is anonymous)."""

    def build(user):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return build
