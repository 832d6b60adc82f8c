"""The worker's CPU per claim, in this process: a table of ready no-op jobs claimed
``--batch`` at a time by the strategy's ``claim`` until none is left, ``time.process_time()``
around each claim (the database's own time is not counted; wall time is printed beside).

    python bench/claim_cpu.py [--jobs 2000] [--batch 10] [--runs 3] [--plans generic|custom]

The database of DATABASE_URL (PostgreSQL, or mysql://... for MariaDB/MySQL; BENCH_SQLITE=1
for SQLite), migrated, its jobs and attempts deleted first. On PostgreSQL on this machine the
server's CPU per claim is printed too (its backend's, from /proc), and ``--plans`` picks how
the prepared claim is planned: ``generic`` as a worker's claims are (``GenericPlans``: planned
once), ``custom`` as other claims are (planned again on every call); both in one run to
compare them in turn (``--plans generic,custom``). For an A/B of two commits, run it
from each checkout in turn (``cd`` there: the script imports the checkout it sits in).
Nothing here is asserted anywhere.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--plans", default="generic", help="generic, custom or both in turn")
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from asyncjobs import db, enqueue_many
    from asyncjobs.models import Attempt, Job
    from bench.tasks import noop

    call_command("migrate", verbosity=0)
    results: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.runs):
        for plans in args.plans.split(","):
            # A new strategy on a new connection for each: its session starts as a worker's.
            connection.close()
            strategy = db.for_alias("default")
            strategy.worker_connections = plans == "generic"
            figures = results.setdefault(plans, {"cpu": [], "wall": [], "server": []})
            Attempt.objects.all().delete()
            Job.objects.all().delete()
            enqueue_many([(noop, (), {}) for _ in range(args.jobs)])
            backend = server_cpu(connection)
            cpu = wall = 0.0
            claims = 0
            while True:
                began_cpu, began = time.process_time(), time.perf_counter()
                got = strategy.claim(
                    queues=["default"],
                    limit=args.batch,
                    worker_id="bench",
                    now=timezone.now(),
                    lease=timedelta(seconds=60),
                )
                cpu += time.process_time() - began_cpu
                wall += time.perf_counter() - began
                if not got:
                    break
                claims += 1
            figures["cpu"].append(cpu / claims * 1e6)
            figures["wall"].append(wall / claims * 1e6)
            if backend is not None:
                figures["server"].append((server_cpu(connection) - backend) / claims * 1e6)
    for plans, figures in results.items():
        server = figures["server"]
        print(
            f"{connection.vendor}, claims of {args.batch}, {args.runs} runs of {args.jobs:,} jobs"
            + (f", {plans} plans" if connection.vendor == "postgresql" else "")
            + f": CPU {statistics.median(figures['cpu']):,.0f} µs per claim "
            f"({', '.join(f'{v:,.0f}' for v in figures['cpu'])}), "
            f"wall {statistics.median(figures['wall']):,.0f} µs"
            + (
                f", server CPU {statistics.median(server):,.0f} µs "
                f"({', '.join(f'{v:,.0f}' for v in server)})"
                if server
                else ""
            )
        )
    return 0


def server_cpu(connection: Any) -> float | None:
    """The CPU seconds so far of ``connection``'s PostgreSQL backend, if it runs on this
    machine (None elsewhere, and on other databases)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
