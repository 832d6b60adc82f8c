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
    args = parser.parse_args()
    import django

    django.setup()
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
