"""Run one system's workloads in this interpreter and print the figures as one JSON line.

    python bench/peers/run_peer.py SYSTEM [--jobs 10000] [--samples 50] [--concurrency 4]

SYSTEM is asyncjobs, asyncjobs-listen, psycopg or mysqlclient (run with the project's
.venv), django-tasks-db, procrastinate or celery (run with bench/.peers, which has them
installed). psycopg and mysqlclient are no queues but baselines: the row asyncjobs stores for
a no-op job, written into the same table by the driver directly (one ``INSERT`` per commit;
for the batch one ``COPY`` with psycopg's ``write_row``, one multi-row ``INSERT`` with
mysqlclient's ``executemany``), and worked off by hand (bench/peers/baseline.py), which is
what the database and its driver cost on this machine.

The server comes from the environment bench/compare.py sets: BENCH_SERVER_URL (default the
local PostgreSQL; mysql://... for MariaDB/MySQL, or a PgBouncer's URL), BENCH_DIRECT_SERVER_URL
(the same server without a pooler: databases are created there; default BENCH_SERVER_URL),
BENCH_DIRECT_PORT (set behind a pooler: the server's own port), BENCH_POLL_INTERVAL (seconds
between an idle worker's looks, for the systems that poll), BENCH_DB_SUFFIX (appended to every
database's name, so that two sessions on one server keep apart). asyncjobs-listen is asyncjobs
behind a pooler with its workers' LISTEN on a direct connection (``LISTEN_DATABASE``);
asyncjobs there polls.

bench/compare.py calls this for each system in turn; the measuring code is the same for all of
them (``--only`` picks workloads):

- enqueue: ``--enqueue-jobs`` calls (default ``--jobs``), one at a time, in autocommit;
- bulk: one batch call of ``--jobs``, where the system has one (asyncjobs ``enqueue_many``,
  procrastinate ``batch_defer``, the baselines);
- drain with 1 and 2 worker processes: ``--drain-jobs`` jobs (default ``--jobs``) are stored
  first with no worker running, then the workers start; the rate is timed from the first job
  done to the last (so worker start-up is not counted), none if every job was done by the
  first look (then a note says so: too few jobs to time);
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
import shlex
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
# bench/compare.py --asyncjobs-checkout: a directory holding only another checkout's asyncjobs
# package, put ahead of ROOT here and in the workers, so that this harness runs that asyncjobs.
OVERLAY = os.environ.get("BENCH_ASYNCJOBS_OVERLAY")
if OVERLAY:
    sys.path.insert(0, OVERLAY)

from bench import latency  # noqa: E402
from bench.common import recreate_database, stop_workers  # noqa: E402

SERVER = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
DIRECT_SERVER = os.environ.get("BENCH_DIRECT_SERVER_URL", SERVER)
MYSQL = SERVER.startswith(("mysql:", "mariadb:"))
POOLED = bool(os.environ.get("BENCH_DIRECT_PORT"))
POLL_INTERVAL = os.environ.get("BENCH_POLL_INTERVAL")
DB_SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")
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

    def url(self) -> str:
        """The URL of the system's database, as its clients reach it."""
        return f"{SERVER}/{self.database}{DB_SUFFIX}"

    def setup(self) -> None:
        if self.settings:
            os.environ["DJANGO_SETTINGS_MODULE"] = self.settings
            recreate_database(f"{DIRECT_SERVER}/{self.database}{DB_SUFFIX}")
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0)

    def server_version(self) -> str | None:
        """The database server's version, for the record (None: not a Django system)."""
        return self.sql("SELECT VERSION()") if self.settings else None

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

    def empty(self, *tables: str) -> None:
        """Empty ``tables`` (the first is the job table) and refresh the job table's
        statistics, so that every run starts from the same empty, analyzed table."""
        if MYSQL:
            # TRUNCATE takes one table, and none that a foreign key points at unless the
            # checks are off (for this session only).
            self.sql("SET FOREIGN_KEY_CHECKS = 0")
            for table in tables:
                self.sql(f"TRUNCATE TABLE {table}")
            self.sql("SET FOREIGN_KEY_CHECKS = 1")
            self.sql_all(f"ANALYZE TABLE {tables[0]}")
        else:
            self.sql(f"TRUNCATE {', '.join(tables)}")
            self.sql(f"VACUUM ANALYZE {tables[0]}")

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
        os.environ["DATABASE_URL"] = self.url()
        super().setup()

    table = "asyncjobs_job"

    def reset(self) -> None:
        self.empty("asyncjobs_job", "asyncjobs_attempt", "asyncjobs_worker")

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
        command = [sys.executable, "-m", "django", "runworker", "--concurrency", str(concurrency)]
        # More runworker options (bench/io_bound.py --worker-args), e.g. "--max-connections 4".
        return command + shlex.split(os.environ.get("BENCH_WORKER_ARGS", ""))

    def enqueue_latency(self, enqueued_at: float) -> None:
        from bench.tasks import noop

        noop.enqueue(enqueued_at=enqueued_at)


class AsyncJobsCheckout(AsyncJobs):
    """asyncjobs from another checkout (BENCH_ASYNCJOBS_OVERLAY), for an A/B of two commits."""

    name = "asyncjobs-checkout"

    def setup(self) -> None:
        if not OVERLAY:
            raise SystemExit("asyncjobs-checkout needs BENCH_ASYNCJOBS_OVERLAY")
        super().setup()


class AsyncJobsListen(AsyncJobs):
    """asyncjobs behind a transaction pooler, its workers listening on a direct connection."""

    name = "asyncjobs-listen"

    def setup(self) -> None:
        if not POOLED:
            raise SystemExit("asyncjobs-listen runs behind a pooler (BENCH_DIRECT_PORT)")
        os.environ["BENCH_LISTEN_DIRECT"] = "1"  # read by bench.settings, workers included
        super().setup()


class AsyncJobsPool(AsyncJobs):
    """asyncjobs with Django's psycopg pool (``OPTIONS["pool"]``, BENCH_DB_POOL connections)
    for every thread of the worker: the I/O-bound benchmark's other way to bound them."""

    name = "asyncjobs-pool"

    def setup(self) -> None:
        os.environ.setdefault("BENCH_DB_POOL", "16")  # read by bench.settings, workers included
        super().setup()


class Baseline(System):
    """The baseline: asyncjobs' row for a no-op job, with a new id and times for each job,
    stored by the bare driver straight into asyncjobs' table (its indexes and, on PostgreSQL,
    its notify trigger), and worked off by bench/peers/baseline.py."""

    settings = "bench.settings"  # for the schema only: migrate creates asyncjobs' tables
    table = "asyncjobs_job"
    concurrency_flag = False  # one claim loop per process

    def setup(self) -> None:
        from bench.peers import baseline

        os.environ["DATABASE_URL"] = self.url()
        super().setup()
        from bench.tasks import noop

        noop.enqueue()  # the template row, as asyncjobs writes it
        self.connection = baseline.connect(self.url(), pooled=POOLED)
        cursor = self.connection.cursor()
        cursor.execute("SELECT * FROM asyncjobs_job")
        self.names = [column[0] for column in cursor.description or ()]
        self.template = list(cursor.fetchone() or ())
        self.reset()
        self.position = {
            name: self.names.index(name) for name in ("id", "enqueued_at", "run_after", "kwargs")
        }
        placeholders = ", ".join(["%s"] * len(self.names))
        self.insert = f"INSERT INTO asyncjobs_job ({', '.join(self.names)}) VALUES ({placeholders})"

    def row(self, kwargs: dict[str, Any] | None = None) -> list[Any]:
        from bench.peers import baseline

        values = self.template.copy()
        values[self.position["id"]] = baseline.new_id(values[self.position["id"]])
        now = baseline.now_like(values[self.position["enqueued_at"]])
        values[self.position["enqueued_at"]] = values[self.position["run_after"]] = now
        if kwargs is not None:
            values[self.position["kwargs"]] = self.json(kwargs)
        return values

    def json(self, value: Any) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        self.empty("asyncjobs_job", "asyncjobs_attempt", "asyncjobs_worker")

    def enqueue_one(self) -> None:
        self.connection.cursor().execute(self.insert, self.row())

    def done(self) -> int:
        return self.sql("SELECT count(*) FROM asyncjobs_job WHERE status = 'succeeded'")

    def worker_command(self, concurrency: int) -> list[str]:
        # Up to 64 jobs per claim: as many as an asyncjobs worker prefetches at most by
        # default (WORKER_PREFETCH), so that both pay one claim per batch of no-op jobs.
        command = [sys.executable, "-m", "bench.peers.baseline", self.url()]
        command += ["--poll", POLL_INTERVAL or "1", "--batch", "64"]
        return command + ["--pooled"] * POOLED

    def enqueue_latency(self, enqueued_at: float) -> None:
        self.connection.cursor().execute(self.insert, self.row({"enqueued_at": enqueued_at}))


class RawPsycopg(Baseline):
    name = "psycopg"
    database = "peers_psycopg"

    def setup(self) -> None:
        super().setup()
        from psycopg.types.json import Jsonb

        for i, value in enumerate(self.template):
            if isinstance(value, list | dict):
                self.template[i] = Jsonb(value)
        self.copy = f"COPY asyncjobs_job ({', '.join(self.names)}) FROM STDIN"

    def json(self, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(value)

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


class RawMysqlclient(Baseline):
    name = "mysqlclient"
    database = "peers_mysqlclient"

    def json(self, value: Any) -> Any:
        return json.dumps(value)

    def bulk(self, n: int) -> Callable[[], None]:
        def batch() -> None:
            # executemany of an INSERT … VALUES: mysqlclient sends multi-row INSERTs, each up
            # to max_allowed_packet, here in one transaction.
            cursor = self.connection.cursor()
            cursor.execute("BEGIN")
            cursor.executemany(self.insert, [self.row() for _ in range(n)])
            cursor.execute("COMMIT")

        return batch


class DjangoTasksDB(System):
    name = "django-tasks-db"
    settings = "bench.peers.settings_djtasks"
    database = "peers_djtasks"
    concurrency_flag = False  # db_worker runs one task at a time per process

    def reset(self) -> None:
        self.empty("django_tasks_database_dbtaskresult")

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
        command = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay"]
        return command + ["--interval", POLL_INTERVAL] * bool(POLL_INTERVAL)

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
    s.name: s
    for s in (
        AsyncJobs,
        AsyncJobsCheckout,
        AsyncJobsListen,
        AsyncJobsPool,
        RawPsycopg,
        RawMysqlclient,
        DjangoTasksDB,
        Procrastinate,
        CeleryRedis,
    )
}
WORKLOADS = ("enqueue", "bulk", "drain_1", "drain_2", "drain_depth", "latency")


def start_workers(system: System, count: int, concurrency: int) -> list[subprocess.Popen]:
    # (``python -m`` puts its working directory first on the path: the overlay, if any.)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [OVERLAY, str(ROOT)]))}
    return [
        subprocess.Popen(
            system.worker_command(concurrency),
            cwd=OVERLAY or ROOT,
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


# Drains of fewer jobs are watched every 10 ms throughout (see bench_drain).
SHORT_DRAIN = 2_000


class Untimed(Exception):
    """A drain that left nothing to time: every job was done by the first look."""


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
        if first_count >= n:
            # (The baseline, claiming 64 at a time, drains a quick run's 200 jobs in a few
            # ms: that rate was reported as 0 jobs/s.)
            raise Untimed(f"all {n} jobs were done by the first look: too few to time")
        # Counting finished jobs reads the whole job table on some systems (no index on the
        # status): a long drain is watched slowly until near the end, then closely, so that
        # the count costs the database little and the end is still timed to 10 ms; a short
        # one closely throughout (a 0.25 s step would be most of its time).
        slowly = 0.25 if n > SHORT_DRAIN else 0.01
        wait_for(lambda: system.done() >= 0.9 * n, 900, f"{n} jobs", interval=slowly)
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
    parser.add_argument("--enqueue-jobs", type=int, help="single enqueues (default: --jobs)")
    parser.add_argument("--drain-jobs", type=int, help="jobs per drain (default: --jobs)")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--depth", type=int, default=100_000, help="future jobs; 0: skip")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated, of: {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--io",
        help="the I/O-bound workloads instead, comma-separated (see bench/peers/io_workloads.py)",
    )
    args = parser.parse_args()
    if args.io:
        from bench.peers import io_workloads

        system = SYSTEMS[args.system]()
        system.setup()
        kinds = args.io.split(",")
        figures = io_workloads.run(system, kinds, args.jobs, args.concurrency)
        print(json.dumps({"system": system.name, "concurrency": args.concurrency, "io": figures}))
        return 0
    only = set(args.only.split(","))
    if unknown := only - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    system = SYSTEMS[args.system]()
    if not args.depth:
        only.discard("drain_depth")
    system.setup()
    enqueued, drained = args.enqueue_jobs or args.jobs, args.drain_jobs or args.jobs
    result: dict[str, Any] = {
        "system": system.name,
        "jobs": args.jobs,
        "enqueue_jobs": enqueued,
        "drain_jobs": drained,
        "depth": args.depth,
    }
    measures: dict[str, Callable[[], float | None]] = {
        "enqueue": lambda: bench_enqueue(system, enqueued),
        "bulk": lambda: bench_bulk(system, args.jobs),
        "drain_1": lambda: bench_drain(system, drained, 1, args.concurrency),
        "drain_2": lambda: bench_drain(system, drained, 2, args.concurrency),
        "drain_depth": lambda: bench_drain(system, drained, 2, args.concurrency, future=args.depth),
    }
    notes = []
    for key, measure in measures.items():
        try:
            result[key] = measure() if key in only else None
        except Untimed as untimed:
            result[key] = None
            notes.append(f"{system.name} {key}: {untimed}")
    result["notes"] = notes
    if "latency" in only:
        latencies = bench_latency(system, args.samples)
        ordered = sorted(latencies)
        result["latency_ms"] = {
            "p50": statistics.median(ordered),
            "p95": ordered[min(round(0.95 * (len(ordered) - 1)), len(ordered) - 1)],
            "all": [round(v, 2) for v in latencies],
        }
    result["concurrency"] = args.concurrency if system.concurrency_flag else 1
    result["server_version"] = system.server_version()
    system.reset()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
