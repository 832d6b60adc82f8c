"""The I/O-bound workloads of bench/io_bound.py, run by bench/peers/run_peer.py ``--io``:
``--jobs`` jobs that each wait 0.2 s, worked off by one worker process at ``--concurrency``.

Kinds (each system runs those it has a task for, see ``TASKS``):

- sleep: ``time.sleep`` in a synchronous task;
- asyncio: ``asyncio.sleep`` in an ``async def`` task;
- orm: one ORM query, then ``time.sleep`` (the connection stays open across the wait);
- orm_async: one query on Django's async ORM, then ``asyncio.sleep``;
- http: a GET to a local server that answers after 0.2 s (bench/peers/slow_http.py, at
  BENCH_IO_URL) in an ``async def`` task, with httpx's ``AsyncClient`` on aiohttp's
  transport (bench/io_http.py has the calls, the same for every system);
- http_aiohttp: the same GET with aiohttp's ``ClientSession`` itself;
- http_sync: the same GET in a synchronous task, with a ``requests.Session`` shared by the
  threads;
- http_httpcore: the same GET with httpx on its own transport (an ``AsyncClient``; Celery,
  which has no async tasks, a ``Client`` shared by its threads), whose pool slows down with
  hundreds of requests in flight;
- http_httpx_sync: the same GET in a synchronous task, with httpx's ``Client`` on its own
  transport shared by the threads.

The jobs are stored first, with no worker running; the rate is timed from the first job
finished to the last, as bench/peers/run_peer.py's drains. While the worker runs, the
harness counts the system's connections to its database (``pg_stat_activity``, its own
excluded) every 20 ms: the peak is reported. A job that failed is counted too, and the run
gives up after BENCH_IO_DEADLINE seconds (default 120), reporting what was done by then.
"""

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# The task each system runs for each kind (absent: the system has no such task).
TASKS: dict[str, dict[str, str]] = {
    "asyncjobs": {
        "sleep": "sleep_sync",
        "asyncio": "sleep_async",
        "orm": "orm_sleep",
        "orm_async": "orm_async",
        "http": "http_async",
        "http_aiohttp": "http_aiohttp",
        "http_sync": "http_sync",
        "http_httpcore": "http_httpcore",
        "http_httpx_sync": "http_httpx_sync",
    },
    "celery": {
        "sleep": "sleep_sync",
        "orm": "orm_sleep",
        "http_sync": "http_sync",
        "http_httpcore": "http_httpcore",
        "http_httpx_sync": "http_httpx_sync",
    },
}
TASKS["procrastinate"] = TASKS["asyncjobs"]
TASKS["asyncjobs-pool"] = TASKS["asyncjobs"]
KINDS = (
    "sleep",
    "asyncio",
    "orm",
    "orm_async",
    "http",
    "http_aiohttp",
    "http_sync",
    "http_httpcore",
    "http_httpx_sync",
)
DEADLINE = float(os.environ.get("BENCH_IO_DEADLINE", "120"))
# Connections each system's database accepts (ALTER DATABASE ... CONNECTION LIMIT): the
# stand-in for a server's max_connections shared with other clients, so that a system that
# opens a connection per thread meets "too many connections" here rather than taking the
# shared server's last ones. PostgreSQL does not enforce it against superusers: connected as
# one (postgres), the server's own max_connections is the limit.
CONNECTION_LIMIT = int(os.environ.get("BENCH_IO_CONNECTION_LIMIT", "50"))


class Adapter:
    """What the I/O workloads need from one system."""

    def __init__(self, system: Any) -> None:
        self.system = system

    def store(self, task: str, n: int) -> None:
        raise NotImplementedError

    def counts(self) -> tuple[int, int]:
        """Jobs finished (succeeded or failed) and failed."""
        raise NotImplementedError

    def reset(self) -> None:
        self.system.reset()

    def command(self, concurrency: int) -> list[str]:
        return self.system.worker_command(concurrency)

    def connections(self) -> int:
        return self.system.sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    def limit_connections(self) -> None:
        name = self.system.sql("SELECT current_database()")
        self.system.sql(f'ALTER DATABASE "{name}" CONNECTION LIMIT {CONNECTION_LIMIT}')


class AsyncJobsAdapter(Adapter):
    def store(self, task: str, n: int) -> None:
        from asyncjobs import enqueue_many
        from bench import io_tasks

        enqueue_many([(getattr(io_tasks, task), (), {}) for _ in range(n)])

    def counts(self) -> tuple[int, int]:
        row = self.system.sql_all(
            "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), "
            "count(*) FILTER (WHERE status = 'failed') FROM asyncjobs_job"
        )[0]
        return row[0], row[1]


class ProcrastinateAdapter(Adapter):
    def store(self, task: str, n: int) -> None:
        from bench.peers.procapp import tasks

        getattr(tasks, task).batch_defer(*[{} for _ in range(n)])

    def counts(self) -> tuple[int, int]:
        row = self.system.sql_all(
            "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), "
            "count(*) FILTER (WHERE status = 'failed') FROM procrastinate_jobs"
        )[0]
        return row[0], row[1]


class CeleryAdapter(Adapter):
    """Celery with its thread pool; Django (bench.peers.settings_celery) for the ORM task."""

    def __init__(self, system: Any) -> None:
        super().__init__(system)
        from bench.common import recreate_database

        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peers.settings_celery"
        server = os.environ.get("BENCH_DIRECT_SERVER_URL") or os.environ.get(
            "BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432"
        )
        recreate_database(f"{server}/peers_celery{os.environ.get('BENCH_DB_SUFFIX', '')}")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from bench.peers import celery_io

        self.app = celery_io

    def reset(self) -> None:
        self.app.counter.flushdb()

    def store(self, task: str, n: int) -> None:
        sig = getattr(self.app, task)
        with self.app.app.producer_or_acquire() as producer:
            for _ in range(n):
                sig.apply_async(producer=producer)

    def counts(self) -> tuple[int, int]:
        done = int(self.app.counter.get("bench:io:done") or 0)
        return done, int(self.app.counter.get("bench:io:failed") or 0)

    def command(self, concurrency: int) -> list[str]:
        command = self.system.worker_command(concurrency)
        return [
            part if part != "bench.peers.celery_app" else "bench.peers.celery_io"
            for part in command
        ]

    def connections(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    def limit_connections(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER DATABASE {connection.settings_dict['NAME']} "
                f"CONNECTION LIMIT {CONNECTION_LIMIT}"
            )


ADAPTERS = {
    "asyncjobs": AsyncJobsAdapter,
    "asyncjobs-pool": AsyncJobsAdapter,
    "procrastinate": ProcrastinateAdapter,
    "celery": CeleryAdapter,
}


def run(system: Any, kinds: list[str], jobs: int, concurrency: int) -> dict[str, Any]:
    """Each kind in turn on one fresh worker process; the figures by kind."""
    from bench.common import stop_workers

    adapter = ADAPTERS[system.name](system)
    adapter.limit_connections()
    results: dict[str, Any] = {}
    for kind in kinds:
        task = TASKS[system.name].get(kind)
        if task is None:
            results[kind] = None
            continue
        adapter.reset()
        adapter.store(task, jobs)
        peak = 0
        first: tuple[float, int] | None = None
        began = time.perf_counter()
        log = tempfile.NamedTemporaryFile(prefix=f"io-{system.name}-{kind}-")  # noqa: SIM115
        procs = [
            subprocess.Popen(
                adapter.command(concurrency),
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        ]
        try:
            done = failed = 0
            while time.perf_counter() - began < DEADLINE:
                peak = max(peak, adapter.connections())
                done, failed = adapter.counts()
                if done and first is None:
                    first = (time.perf_counter(), done)
                if done >= jobs:
                    break
                time.sleep(0.02)
            ended = time.perf_counter()
        finally:
            stop_workers(procs)
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-20:]
            log.close()
        rate = None
        if first is not None and ended > first[0]:
            rate = (done - first[1]) / (ended - first[0])
        results[kind] = {
            "task": task,
            "jobs_per_s": rate,
            "done": done,
            "failed": failed,
            "finished": done >= jobs,
            "peak_connections": peak,
            # What the worker said last, when it did not finish (for the reader).
            "log_tail": tail if done < jobs else [],
        }
    adapter.reset()
    return results
