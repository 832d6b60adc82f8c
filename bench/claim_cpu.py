"""The worker's CPU per claim, in this process: a table of ready no-op jobs claimed
``--batch`` at a time by the strategy's ``claim`` until none is left, ``time.process_time()``
around each claim (the database's own time is not counted; wall time is printed beside).

    python bench/claim_cpu.py [--jobs 2000] [--batch 10] [--runs 3]

The database of DATABASE_URL (PostgreSQL, or mysql://... for MariaDB/MySQL; BENCH_SQLITE=1
for SQLite), migrated, its jobs and attempts deleted first. For an A/B of two commits, run it
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
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
    strategy = db.for_alias("default")
    cpu_runs, wall_runs = [], []
    for _ in range(args.runs):
        Attempt.objects.all().delete()
        Job.objects.all().delete()
        enqueue_many([(noop, (), {}) for _ in range(args.jobs)])
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
        cpu_runs.append(cpu / claims * 1e6)
        wall_runs.append(wall / claims * 1e6)
    print(
        f"{connection.vendor}, claims of {args.batch}, {args.runs} runs of {args.jobs:,} jobs: "
        f"CPU {statistics.median(cpu_runs):,.0f} µs per claim "
        f"({', '.join(f'{v:,.0f}' for v in cpu_runs)}), "
        f"wall {statistics.median(wall_runs):,.0f} µs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
