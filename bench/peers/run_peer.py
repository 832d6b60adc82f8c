"""Run one system's workloads in this interpreter and print the figures as one JSON line.

    python bench/peers/run_peer.py SYSTEM [--jobs 10000] [--samples 50] [--concurrency 4]

SYSTEM is asyncjobs or psycopg (run with the project's .venv), django-tasks-db,
procrastinate or celery (run with bench/.peers, which has them installed). psycopg is no
queue but a baseline: the row asyncjobs stores for a no-op job, written into the same table
by psycopg directly (one ``INSERT`` per commit; one ``COPY`` with psycopg's ``write_row``),
which is what the database and its driver cost on this machine. bench/compare.py calls this
for each system in turn; the measuring code is the same for all of them (``--only`` picks
workloads; the baseline has no worker, so no drain or latency):

- enqueue: ``--jobs`` calls, one at a time, in autocommit;
- bulk: one batch call, where the system has one (asyncjobs ``enqueue_many``,
  procrastinate ``batch_defer``);
- drain with 1 and 2 worker processes: the jobs are stored first with no worker running,
  then the workers start; the rate is timed from the first job done to the last (so worker
  start-up is not counted);
- drain with depth: as the drain with 2 worker processes, with ``--depth`` jobs due tomorrow
  in the table too: one is stored through the system's API, then copied by one
  ``INSERT … SELECT`` and not analyzed (as after a burst, before autovacuum comes by); not for
  Celery, whose workers take future (ETA) jobs out of Redis into memory;
- latency: one idle worker process (concurrency 1), warmed up; a job is enqueued with the
  client's ``time.time()`` as its argument, and the task's first act is to write down how
  long ago that was (``bench.latency``): one clock and one definition for every system,
  from the enqueue call to the first line of the task body.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import latency  # noqa: E402
from bench.common import recreate_database, stop_workers  # noqa: E402

PEER_SERVER = "postgresql://postgres@127.0.0.1:5432"
# Where the latency run's tasks write their start delays (bench.latency); the workers inherit it.
LATENCY_FILE = os.environ.setdefault(
    "BENCH_LATENCY_FILE", os.path.join(tempfile.gettempdir(), f"bench-latency-{os.getpid()}")
)


class System:
    """What the harness needs from a queue."""

    name = ""
    settings = ""  # a Django settings module, if the system is a Django app
    database = ""
    concurrency_flag = True  # whether its worker runs several jobs at once
    has_worker = True  # False: a baseline that only stores jobs

    def setup(self) -> None:
        if self.settings:
            os.environ["DJANGO_SETTINGS_MODULE"] = self.settings
            recreate_database(f"{PEER_SERVER}/{self.database}")
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0)

    def sql_all(self, statement: str) -> list[tuple]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def sql(self, statement: str) -> Any:
        """The first value of the first row, or None for a statement without a result."""
        rows = self.sql_all(statement)
        return rows[0][0] if rows else None

    def reset(self) -> None:
        raise NotImplementedError

    def enqueue_one(self) -> None:
        raise NotImplementedError

    def bulk(self, n: int) -> Callable[[], None] | None:
        """A callable that stores ``n`` jobs in one batch, or None if there is no batch API."""
        return None

    def store(self, n: int) -> None:
        """Store ``n`` jobs (no worker running) for a drain."""
        batch = self.bulk(n)
        if batch is not None:
            batch()
        else:
            for _ in range(n):
                self.enqueue_one()

    def done(self) -> int:
        raise NotImplementedError

    # The job table, and a call that stores one no-op job due tomorrow through the system's
    # API (None: the system keeps future jobs elsewhere).
    table = ""

    def enqueue_future(self) -> Any:
        return None

    def store_future(self, n: int) -> bool:
        """Put ``n`` jobs due tomorrow in the (empty) job table; False if not supported."""
        if not self.table or self.enqueue_future() is None:
            return False
        columns = self.sql_all(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_name = '{self.table}' ORDER BY ordinal_position"
        )
        names = [name for name, _ in columns if name != "id"]
        uuid_id = ("id", "uuid") in columns
        select = ", ".join(["gen_random_uuid()"] * uuid_id + names)
        insert = ", ".join(["id"] * uuid_id + names)
        self.sql(
            f"INSERT INTO {self.table} ({insert}) SELECT {select} "
            f"FROM {self.table} CROSS JOIN generate_series(2, {int(n)})"
        )
        return True

    def worker_command(self, concurrency: int) -> list[str]:
        raise NotImplementedError

    def enqueue_latency(self, enqueued_at: float) -> None:
        """Enqueue one no-op job that calls ``bench.latency.record(enqueued_at)``."""
        raise NotImplementedError

    def start_latency_job(self) -> int:
        """Enqueue a latency job; its handle is its place in the probe file."""
        handle = len(latency.read(LATENCY_FILE))
        self.enqueue_latency(time.time())
        return handle

    def started_after(self, handle: int) -> float | None:
        """Seconds from enqueue to start of the job ``handle``, or None if not started."""
        delays = latency.read(LATENCY_FILE)
        return delays[handle] if len(delays) > handle else None


class AsyncJobs(System):
    name = "asyncjobs"
    settings = "bench.settings"
    database = "asyncjobs_bench"

    def setup(self) -> None:
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.database}"
        super().setup()

    table = "asyncjobs_job"

    def reset(self) -> None:
        self.sql("TRUNCATE asyncjobs_attempt, asyncjobs_job, asyncjobs_worker")
        self.sql("VACUUM ANALYZE asyncjobs_job")

    def enqueue_future(self) -> Any:
        from bench.tasks import noop

        return noop.using(run_after=tomorrow()).enqueue()

    def enqueue_one(self) -> None:
        from bench.tasks import noop

        noop.enqueue()

    def bulk(self, n: int) -> Callable[[], None]:
        from asyncjobs import enqueue_many
        from bench.tasks import noop

        calls = [(noop, (), {}) for _ in range(n)]
        return lambda: enqueue_many(calls)

    def done(self) -> int:
        return self.sql("SELECT count(*) FROM asyncjobs_job WHERE status = 'succeeded'")

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "django", "runworker", "--concurrency", str(concurrency)]

    def enqueue_latency(self, enqueued_at: float) -> None:
        from bench.tasks import noop

        noop.enqueue(enqueued_at=enqueued_at)


class RawPsycopg(System):
    """The baseline: asyncjobs' row for a no-op job, with a new id and times for each job,
    stored by psycopg straight into asyncjobs' table (its indexes and notify trigger)."""

    name = "psycopg"
    settings = "bench.settings"  # for the schema only: migrate creates asyncjobs' tables
    database = "peers_psycopg"
    has_worker = False
    table = "asyncjobs_job"

    def setup(self) -> None:
        import uuid
        from datetime import UTC, datetime

        import psycopg
        from psycopg.types.json import Jsonb

        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{self.database}"
        super().setup()
        from bench.tasks import noop

        noop.enqueue()  # the template row, as asyncjobs writes it
        self.connection = psycopg.connect(f"{PEER_SERVER}/{self.database}", autocommit=True)
        cursor = self.connection.execute("SELECT * FROM asyncjobs_job")
        names = [column.name for column in cursor.description or ()]
        template = list(cursor.fetchone() or ())
        self.reset()
        for i, value in enumerate(template):
            if isinstance(value, list | dict):
                template[i] = Jsonb(value)
        position = {name: names.index(name) for name in ("id", "enqueued_at", "run_after")}

        def row() -> list[Any]:
            values = template.copy()
            values[position["id"]] = uuid.uuid4()
            values[position["enqueued_at"]] = values[position["run_after"]] = datetime.now(UTC)
            return values

        self.row = row
        columns = ", ".join(names)
        self.insert = (
            f"INSERT INTO asyncjobs_job ({columns}) VALUES ({', '.join(['%s'] * len(names))})"
        )
        self.copy = f"COPY asyncjobs_job ({columns}) FROM STDIN"

    def reset(self) -> None:
        self.sql("TRUNCATE asyncjobs_attempt, asyncjobs_job, asyncjobs_worker")
        self.sql("VACUUM ANALYZE asyncjobs_job")

    def enqueue_one(self) -> None:
        self.connection.execute(self.insert, self.row())

    def bulk(self, n: int) -> Callable[[], None]:
        def batch() -> None:
            with (
                self.connection.transaction(),
                self.connection.cursor() as cursor,
                cursor.copy(self.copy) as copy,
            ):
                for _ in range(n):
                    copy.write_row(self.row())

        return batch

    def done(self) -> int:
        return 0


class DjangoTasksDB(System):
    name = "django-tasks-db"
    settings = "bench.peers.settings_djtasks"
    database = "peers_djtasks"
    concurrency_flag = False  # db_worker runs one task at a time per process

    def reset(self) -> None:
        self.sql("TRUNCATE django_tasks_database_dbtaskresult")
        self.sql("VACUUM ANALYZE django_tasks_database_dbtaskresult")

    table = "django_tasks_database_dbtaskresult"

    def enqueue_future(self) -> Any:
        from bench.peers.djtasks_tasks import noop

        return noop.using(run_after=tomorrow()).enqueue()

    def enqueue_one(self) -> None:
        from bench.peers.djtasks_tasks import noop

        noop.enqueue()

    def done(self) -> int:
        return self.sql(
            "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status = 'SUCCESSFUL'"
        )

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "django", "db_worker", "--no-startup-delay"]

    def enqueue_latency(self, enqueued_at: float) -> None:
        from bench.peers.djtasks_tasks import noop

        noop.enqueue(enqueued_at=enqueued_at)


class Procrastinate(System):
    name = "procrastinate"
    settings = "bench.peers.settings_procrastinate"
    database = "peers_procrastinate"

    def reset(self) -> None:
        self.sql("TRUNCATE procrastinate_jobs, procrastinate_events CASCADE")
        self.sql("VACUUM ANALYZE procrastinate_jobs")

    table = "procrastinate_jobs"

    def enqueue_future(self) -> Any:
        return self._task().configure(schedule_at=tomorrow()).defer()

    def _task(self) -> Any:
        from bench.peers.procapp.tasks import noop

        return noop

    def enqueue_one(self) -> None:
        self._task().defer()

    def bulk(self, n: int) -> Callable[[], None]:
        task = self._task()
        return lambda: task.batch_defer(*[{} for _ in range(n)])

    def done(self) -> int:
        return self.sql("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "django",
            "procrastinate",
            "worker",
            "--concurrency",
            str(concurrency),
        ]

    def enqueue_latency(self, enqueued_at: float) -> None:
        self._task().defer(enqueued_at=enqueued_at)


class CeleryRedis(System):
    name = "celery"

    def setup(self) -> None:
        from bench.peers.celery_app import counter

        counter.ping()

    def reset(self) -> None:
        from bench.peers.celery_app import counter

        counter.flushdb()

    def enqueue_one(self) -> None:
        from bench.peers.celery_app import noop

        noop.delay()

    def done(self) -> int:
        from bench.peers.celery_app import counter

        return int(counter.get("bench:done") or 0)

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def enqueue_latency(self, enqueued_at: float) -> None:
        from bench.peers.celery_app import noop

        noop.delay(enqueued_at=enqueued_at)


SYSTEMS: dict[str, type[System]] = {
    s.name: s for s in (AsyncJobs, RawPsycopg, DjangoTasksDB, Procrastinate, CeleryRedis)
}
WORKLOADS = ("enqueue", "bulk", "drain_1", "drain_2", "drain_depth", "latency")


def start_workers(system: System, count: int, concurrency: int) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        subprocess.Popen(
            system.worker_command(concurrency),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def tomorrow() -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(days=1)


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def bench_enqueue(system: System, n: int) -> float:
    system.reset()
    start = time.perf_counter()
    for _ in range(n):
        system.enqueue_one()
    return n / (time.perf_counter() - start)


def bench_bulk(system: System, n: int) -> float | None:
    system.reset()
    batch = system.bulk(n)
    if batch is None:
        return None
    start = time.perf_counter()
    batch()
    return n / (time.perf_counter() - start)


def bench_drain(
    system: System, n: int, workers: int, concurrency: int, future: int = 0
) -> float | None:
    system.reset()
    if future and not system.store_future(future):
        return None
    system.store(n)
    procs = start_workers(system, workers, concurrency)
    try:
        wait_for(lambda: system.done() > 0, 120, "the first job")
        first = time.perf_counter()
        first_count = system.done()
        # Counting finished jobs reads the whole job table on some systems (no index on the
        # status): poll slowly until near the end, then closely, so that the count costs the
        # database little and the end is still timed to 10 ms.
        wait_for(lambda: system.done() >= 0.9 * n, 900, f"{n} jobs", interval=0.25)
        wait_for(lambda: system.done() >= n, 300, f"{n} jobs")
        elapsed = time.perf_counter() - first
    finally:
        stop_workers(procs)
    return (n - first_count) / elapsed if elapsed > 0 else float("nan")


def bench_latency(system: System, samples: int) -> list[float]:
    system.reset()
    Path(LATENCY_FILE).unlink(missing_ok=True)
    procs = start_workers(system, 1, 1)
    latencies: list[float] = []
    try:
        warm = system.start_latency_job()  # the first job also waits for start-up
        wait_for(lambda: system.started_after(warm) is not None, 120, "the warm-up job")
        time.sleep(0.5)
        for _ in range(samples):
            handle = system.start_latency_job()
            box: list[float] = []

            def started(h: Any = handle, box: list[float] = box) -> bool:
                value = system.started_after(h)
                if value is not None:
                    box.append(value)
                return value is not None

            wait_for(started, 30, "a job to start")
            latencies.append(box[0] * 1000)
            time.sleep(0.05)
    finally:
        stop_workers(procs)
        Path(LATENCY_FILE).unlink(missing_ok=True)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--depth", type=int, default=100_000, help="future jobs; 0: skip")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated, of: {', '.join(WORKLOADS)}"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    system = SYSTEMS[args.system]()
    if not system.has_worker:
        only -= {"drain_1", "drain_2", "drain_depth", "latency"}
    if not args.depth:
        only.discard("drain_depth")
    system.setup()
    result: dict[str, Any] = {"system": system.name, "jobs": args.jobs, "depth": args.depth}
    measures: dict[str, Callable[[], float | None]] = {
        "enqueue": lambda: bench_enqueue(system, args.jobs),
        "bulk": lambda: bench_bulk(system, args.jobs),
        "drain_1": lambda: bench_drain(system, args.jobs, 1, args.concurrency),
        "drain_2": lambda: bench_drain(system, args.jobs, 2, args.concurrency),
        "drain_depth": lambda: bench_drain(
            system, args.jobs, 2, args.concurrency, future=args.depth
        ),
    }
    for key, measure in measures.items():
        result[key] = measure() if key in only else None
    if "latency" in only:
        latencies = bench_latency(system, args.samples)
        ordered = sorted(latencies)
        result["latency_ms"] = {
            "p50": statistics.median(ordered),
            "p95": ordered[min(round(0.95 * (len(ordered) - 1)), len(ordered) - 1)],
            "all": [round(v, 2) for v in latencies],
        }
    result["concurrency"] = args.concurrency if system.concurrency_flag else 1
    system.reset()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
