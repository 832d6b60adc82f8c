import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.tasks import task_backends

from asyncjobs.worker.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config):
    return f"asyncjobs database: {os.environ.get('DATABASE_URL') or 'SQLite (default)'}"


@pytest.fixture(autouse=True)
def _vendor_markers(request):
    """``@pytest.mark.postgres`` / ``@pytest.mark.sqlite`` tests run on their vendor only."""
    vendor = connection.vendor
    if request.node.get_closest_marker("postgres") and vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    if request.node.get_closest_marker("sqlite") and vendor != "sqlite":
        pytest.skip("SQLite only")


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
