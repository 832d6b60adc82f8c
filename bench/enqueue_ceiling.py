"""The ceiling of durable one-at-a-time enqueues from a few client threads: how many jobs a
second ``task.enqueue()`` reaches, against the same row written by the bare driver (one
``INSERT`` per commit on a psycopg connection of each thread, prepared as psycopg prepares
it by default): the floor of what the database and the driver allow here. The soak
(bench/soak.py) needs 1,000 a second from 2 threads.

    python bench/enqueue_ceiling.py [--threads 2] [--seconds 10] [--rounds 3] [--workers 0]

The two take turns (asyncjobs, psycopg, asyncjobs, ...), each round ``--seconds`` long with
``--threads`` threads enqueueing as fast as they can. ``--workers N`` has N worker processes
(``--concurrency``, default 8) drain the jobs meanwhile, as in the soak, so that the clients
share the machine with them. Prints each round's rate and the clients' CPU per job
(``time.thread_time()``, which the load does not change), and the medians, with the load
average. The database of DATABASE_URL (PostgreSQL), migrated; its jobs are deleted before
each round. Nothing here is asserted anywhere.

``--cost``: the client's cost of one enqueue, the same in any load, on PostgreSQL, MariaDB/MySQL
(DATABASE_URL) or SQLite (BENCH_SQLITE=1): ``--jobs`` enqueues in one thread, asyncjobs and the
bare driver's ``INSERT`` of the same row (psycopg, mysqlclient, sqlite3, each in autocommit)
taking turns for ``--rounds``; prints the median CPU per enqueue (``time.thread_time()``).
With ``--callgrind`` each system also runs under ``valgrind --tool=callgrind``, with ``--jobs``
and twice as many enqueues, and the difference of the two totals over ``--jobs`` is its
instructions per enqueue (set-up, imports and migrations cancel out)::

    python bench/enqueue_ceiling.py --cost [--jobs 2000] [--rounds 5] [--callgrind]

For an A/B of two commits, run it in turn with BENCH_ASYNCJOBS_OVERLAY set to a directory
holding only a symlink ``asyncjobs`` to the other checkout's package, and without.
"""

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# As bench/pickup_cost.py: another checkout's asyncjobs package, put first, for an A/B.
if overlay := os.environ.get("BENCH_ASYNCJOBS_OVERLAY"):
    sys.path.insert(0, overlay)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def asyncjobs_client() -> tuple[Callable[[], None], Callable[[], None]]:
    """One thread's enqueue (``noop.enqueue()``, on the thread's own Django connection), and
    its clean-up."""
    from django.db import connection

    from bench.tasks import noop

    return noop.enqueue, connection.close


def psycopg_client(url: str, template: dict[str, Any]) -> tuple[Callable[[], None], Callable]:
    """One thread's bare insert of the row asyncjobs stores (``template``, new id and times
    each time), on a psycopg connection of its own in autocommit."""
    import psycopg
    from psycopg.types.json import Jsonb

    conn = psycopg.connect(url, autocommit=True)
    names = list(template)
    row = [Jsonb(v) if isinstance(v, list | dict) else v for v in template.values()]
    at = {name: names.index(name) for name in ("id", "enqueued_at", "run_after")}
    insert = (
        f"INSERT INTO asyncjobs_job ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
    )
    cursor = conn.cursor()

    def enqueue() -> None:
        values = row.copy()
        values[at["id"]] = uuid.uuid4()
        values[at["enqueued_at"]] = values[at["run_after"]] = datetime.now(UTC)
        cursor.execute(insert, values)

    return enqueue, conn.close


def driver_client(template: dict[str, Any]) -> tuple[Callable[[], None], Callable]:
    """One thread's bare insert of ``template`` by the driver of Django's default database
    (psycopg, mysqlclient or sqlite3), in autocommit, on a connection of its own."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        return psycopg_client(os.environ["DATABASE_URL"], template)
    names = list(template)
    row = list(template.values())
    at = {name: names.index(name) for name in ("id", "enqueued_at", "run_after")}
    marks = ", ".join(["%s" if connection.vendor == "mysql" else "?"] * len(names))
    insert = f"INSERT INTO asyncjobs_job ({', '.join(names)}) VALUES ({marks})"
    if connection.vendor == "mysql":
        import MySQLdb

        conn = MySQLdb.connect(
            host=settings["HOST"] or "127.0.0.1",
            port=int(settings["PORT"] or 3306),
            user=settings["USER"],
            password=settings["PASSWORD"],
            database=settings["NAME"],
            charset="utf8mb4",
            autocommit=True,
        )

        def now() -> Any:  # (naive UTC, as Django stores it on MySQL)
            return datetime.now(UTC).replace(tzinfo=None)
    else:
        import sqlite3

        conn = sqlite3.connect(settings["NAME"], isolation_level=None, timeout=20)
        conn.execute("PRAGMA synchronous=NORMAL")  # (as the bench's Django connection)

        def now() -> Any:  # (the text Django stores on SQLite)
            return datetime.now(UTC).replace(tzinfo=None).isoformat(" ")

    cursor = conn.cursor()

    def enqueue() -> None:
        values = row.copy()
        values[at["id"]] = uuid.uuid4().hex
        values[at["enqueued_at"]] = values[at["run_after"]] = now()
        cursor.execute(insert, values)

    return enqueue, conn.close


def stored_row() -> dict[str, Any]:
    """The row of one ``noop.enqueue()``, as the database's own driver reads it."""
    from django.db import connection

    from asyncjobs.models import Job
    from bench.tasks import noop

    noop.enqueue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM asyncjobs_job LIMIT 1")
        names = [column[0] for column in cursor.description]
        if connection.vendor == "postgresql":  # (Django's cursor: psycopg's own values)
            return dict(zip(names, cursor.fetchone(), strict=True))
    raw = connection.connection.cursor()  # sqlite3's or mysqlclient's values, unconverted
    raw.execute("SELECT * FROM asyncjobs_job LIMIT 1")
    values = raw.fetchone()
    raw.close()
    Job.objects.all().delete()
    return dict(zip(names, values, strict=True))


def clear_jobs() -> None:
    """Delete every job (and attempt, worker)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE asyncjobs_job, asyncjobs_attempt, asyncjobs_worker")
        else:
            for table in ("asyncjobs_attempt", "asyncjobs_job", "asyncjobs_worker"):
                cursor.execute(f"DELETE FROM {table}")


def cost_run(make: Callable[[], tuple[Callable[[], None], Callable]], jobs: int) -> float:
    """The CPU of one enqueue in µs (``time.thread_time()``), over ``jobs`` of them in this
    thread, after 50 not counted."""
    enqueue, close = make()
    try:
        for _ in range(50):  # connected, statements prepared, caches filled
            enqueue()
        began = time.thread_time()
        for _ in range(jobs):
            enqueue()
        return (time.thread_time() - began) / jobs * 1e6
    finally:
        close()


def callgrind_instructions(system: str, jobs: int) -> float:
    """Instructions per enqueue of ``system``: the difference of two runs of this script
    under callgrind, with ``2 * jobs`` and ``jobs`` enqueues, over ``jobs``."""
    import re
    import subprocess

    totals = []
    for count in (jobs, 2 * jobs):
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--cost",
            "--rounds=1",
            f"--jobs={count}",
            f"--only={system}",
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=True, timeout=3600
        )
        totals.append(int(re.findall(r"Collected : (\d+)", done.stderr)[-1]))
    return (totals[1] - totals[0]) / jobs


def cost(args: argparse.Namespace) -> int:
    """``--cost``: see the module's docstring."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    clear_jobs()
    template = stored_row()
    driver = {"postgresql": "psycopg", "mysql": "mysqlclient"}.get(connection.vendor, "sqlite3")
    systems = {
        "asyncjobs": asyncjobs_client,
        driver: lambda: driver_client(template),
    }
    if args.only:  # (a run under callgrind: one system)
        systems = {
            name: systems[name] for name in [driver if args.only == "driver" else "asyncjobs"]
        }
    cpus: dict[str, list[float]] = {name: [] for name in systems}
    for number in range(args.rounds):
        for name, make in systems.items():
            clear_jobs()
            cpus[name].append(cost_run(make, args.jobs))
            if not args.only:
                print(f"round {number + 1} {name}: {cpus[name][-1]:,.1f} µs CPU per enqueue")
    clear_jobs()
    if args.only:
        return 0
    summary = ", ".join(f"{name} {statistics.median(c):,.1f}" for name, c in cpus.items())
    print(
        f"{connection.vendor}, {args.rounds} rounds of {args.jobs} enqueues in one thread, "
        f"median CPU per enqueue (µs): {summary} (load {os.getloadavg()[0]:.1f})"
    )
    if args.callgrind:
        counts = {
            name: callgrind_instructions(
                "asyncjobs" if name == "asyncjobs" else "driver", args.callgrind_jobs
            )
            for name in systems
        }
        print(
            f"{connection.vendor}, instructions per enqueue (callgrind, {args.callgrind_jobs} "
            "and twice as many): "
            + ", ".join(f"{name} {count:,.0f}" for name, count in counts.items())
        )
    connection.close()
    return 0


def run_round(
    make: Callable[[], tuple[Callable[[], None], Callable]], threads: int, seconds: float
) -> tuple[float, float]:
    """Jobs per second from ``threads`` threads, each enqueueing as fast as it can, and the
    clients' CPU per job in µs (``time.thread_time()``: the same in any load)."""
    counts = [0] * threads
    cpu = [0.0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def work(i: int) -> None:
        enqueue, close = make()
        try:
            enqueue()  # connected and warm before the clock starts
            start.wait()
            began = time.thread_time()
            while not stop.is_set():
                enqueue()
                counts[i] += 1
            cpu[i] = time.thread_time() - began
        finally:
            close()

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    return sum(counts) / (time.perf_counter() - began), sum(cpu) / max(sum(counts), 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="worker processes draining")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cost", action="store_true", help="CPU per enqueue, one thread")
    parser.add_argument("--jobs", type=int, default=2000, help="--cost: enqueues per round")
    parser.add_argument("--callgrind", action="store_true", help="--cost: and instructions")
    parser.add_argument("--callgrind-jobs", type=int, default=300)
    parser.add_argument("--only", choices=["asyncjobs", "driver"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    import django

    django.setup()
    if args.cost:
        return cost(args)
    from django.core.management import call_command
    from django.db import connection

    from bench.common import stop_workers
    from bench.run import start_workers
    from bench.tasks import noop

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE asyncjobs_job, asyncjobs_attempt, asyncjobs_worker")
    noop.enqueue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM asyncjobs_job LIMIT 1")
        names = [column.name for column in cursor.description]
        template = dict(zip(names, cursor.fetchone(), strict=True))
    url = os.environ["DATABASE_URL"]
    systems = {
        "asyncjobs": asyncjobs_client,
        "psycopg": lambda: psycopg_client(url, template),
    }
    rates: dict[str, list[float]] = {name: [] for name in systems}
    cpus: dict[str, list[float]] = {name: [] for name in systems}
    loads: list[float] = []
    for number in range(args.rounds):
        for name, make in systems.items():
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE asyncjobs_job, asyncjobs_attempt, asyncjobs_worker")
            procs = start_workers(args.workers, args.concurrency) if args.workers else []
            try:
                rate, cpu = run_round(make, args.threads, args.seconds)
            finally:
                stop_workers(procs)
            loads.append(os.getloadavg()[0])
            rates[name].append(rate)
            cpus[name].append(cpu)
            print(
                f"round {number + 1} {name}: {rate:,.0f} jobs/s, client CPU {cpu:,.0f} µs per "
                f"job (load {loads[-1]:.1f})"
            )
    ratio = statistics.median(rates["asyncjobs"]) / statistics.median(rates["psycopg"])
    print(
        f"{args.threads} threads, {args.workers} workers draining, {args.rounds} rounds of "
        f"{args.seconds:g} s, load {min(loads):.1f}-{max(loads):.1f}: "
        + ", ".join(
            f"{name} {statistics.median(r):,.0f} jobs/s ({statistics.median(cpus[name]):,.0f} µs "
            "client CPU per job)"
            for name, r in rates.items()
        )
        + f"; asyncjobs / psycopg {ratio:.2f}"
    )
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
