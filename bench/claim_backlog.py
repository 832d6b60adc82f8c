"""A claim with a deep backlog of ready jobs, and what the every-queue claim index costs the
writes: the same database with and without ``asyncjobs_job_claim_all``, taking turns.

    python bench/claim_backlog.py [--ready 200000] [--queues 8] [--claims 30] [--batch 10]
        [--jobs 5000] [--rows 100000] [--runs 3]

The backlog: ``--ready`` ready jobs spread over ``--queues`` queues (q0, q1, ...) with
priorities from -10 to 10, inserted in one statement and analyzed. Then, each run, once
without the index and once with it (dropped and built between the two; the order alternates
from run to run):

- claims: ``--claims`` claims of ``--batch`` jobs by a worker of every queue, of one queue,
  and of every queue named (``pick_queues``), each rolled back (so every claim sees the same
  backlog): the median wall time of the claim's statement, and the buffers it touched
  (``EXPLAIN (ANALYZE, BUFFERS)`` of the same statement: the same in any load);
- writes: one ``INSERT ... SELECT`` of ``--rows`` new ready jobs (the server's own cost
  of storing them, then deleted), ``--jobs`` single enqueues, one ``enqueue_many`` of
  ``--jobs``, and the drain of those jobs by ``claim`` (one queue, ``--batch`` at a time) and
  ``complete_succeeded``: per job, the WAL it wrote (``pg_current_wal_insert_lsn``) and the
  server process's CPU (``/proc/<backend pid>/stat``; the database runs on this machine), a
  ``CHECKPOINT`` before each so that both variants pay full-page images alike; the table
  is vacuumed after each variant's writes.

PostgreSQL only: the database of DATABASE_URL, migrated, its jobs and attempts deleted
first. Nothing is asserted anywhere.
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.common import write_results  # noqa: E402

INDEX = "asyncjobs_job_claim_all"

BACKLOG_SQL = """
INSERT INTO asyncjobs_job (
    id, backend, task_path, args, kwargs, queue_name, priority, status, enqueued_at, run_after,
    attempts, max_attempts, free_attempts, backoff, retry_on, fail_on,
    last_error_class, last_error_message, worker_id, webhook_url, limit_key, limit_rate)
SELECT
    gen_random_uuid(), 'default', 'bench.tasks.noop', '[]', '{}', 'q' || (g %% %(queues)s),
    ((g * 7919) %% 21) - 10, 'queued', now() - interval '1 hour' + (g || ' ms')::interval,
    now() - interval '1 hour' + ((g * 31) %% 3600000 || ' ms')::interval,
    0, 3, 0, '{}', '[]', '[]', '', '', '', '', '', ''
FROM generate_series(1, %(n)s) AS g
"""

# New jobs as they come: due now, in enqueue order, at three priorities.
INSERT_SQL = """
INSERT INTO asyncjobs_job (
    id, backend, task_path, args, kwargs, queue_name, priority, status, enqueued_at, run_after,
    attempts, max_attempts, free_attempts, backoff, retry_on, fail_on,
    last_error_class, last_error_message, worker_id, webhook_url, limit_key, limit_rate)
SELECT
    gen_random_uuid(), 'default', 'bench.tasks.noop', '[]', '{}', 'default', g %% 3 - 1,
    'queued', clock_timestamp(), clock_timestamp(),
    0, 3, 0, '{}', '[]', '[]', '', '', '', '', '', ''
FROM generate_series(1, %(n)s) AS g
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ready", type=int, default=200_000)
    parser.add_argument("--queues", type=int, default=8)
    parser.add_argument("--claims", type=int, default=30)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from asyncjobs.models import Attempt, Job

    call_command("migrate", verbosity=0)
    if connection.vendor != "postgresql":
        print("PostgreSQL only", file=sys.stderr)
        return 2
    index = next(i for i in Job._meta.indexes if i.name == INDEX)
    Attempt.objects.all().delete()
    Job.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(BACKLOG_SQL, {"n": args.ready, "queues": args.queues})
        cursor.execute("VACUUM ANALYZE asyncjobs_job")
    names = [f"q{i}" for i in range(args.queues)]
    workers = {"every queue": None, "one queue": names[:1], "every queue by name": names}
    results: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for run in range(args.runs):
        order = ["without", "with"] if run % 2 == 0 else ["with", "without"]
        for variant in order:
            _set_index(connection, Job, index, variant == "with")
            figures = {}
            for label, queues in workers.items():
                wall, blocks = _claims(connection, queues, args.claims, args.batch)
                figures[f"claim ms, {label}"] = wall
                figures[f"claim buffers, {label}"] = blocks
            figures.update(_writes(connection, args.jobs, args.rows, args.batch))
            results[variant].append(figures)
            print(f"run {run + 1}, {variant} the index: {json.dumps(figures)}", flush=True)
    print(f"\nmedians of {args.runs} runs, {args.ready:,} ready jobs in {args.queues} queues")
    print(f"{'':56} {'without':>10} {'with':>10} {'ratio':>6}")
    medians = {}
    for key in results["without"][0]:
        a = statistics.median(r[key] for r in results["without"])
        b = statistics.median(r[key] for r in results["with"])
        medians[key] = {"without": a, "with": b}
        print(f"{key:56} {a:10.2f} {b:10.2f} {b / a if a else float('nan'):6.2f}")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "load_average": load,
        "medians": medians,
        "raw": results,
    }
    print(f"written to {write_results(ROOT / 'bench' / 'results', 'claim-backlog-', report)}")
    return 0


def _set_index(connection, model, index, present: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [index.name])
        exists = cursor.fetchone() is not None
    if exists != present:
        with connection.schema_editor() as editor:
            (editor.add_index if present else editor.remove_index)(model, index)


def _claims(connection, queues, claims: int, batch: int) -> tuple[float, float]:
    """The median wall time (ms) of ``claims`` claims, each rolled back, and the buffers
    the claim's statement touched."""
    from django.db import transaction
    from django.utils import timezone

    from asyncjobs import db
    from asyncjobs.db.postgresql import _start_sql

    strategy = db.for_alias("default")
    lease = timedelta(seconds=60)
    times = []
    for i in range(claims + 1):
        with transaction.atomic():
            began = time.perf_counter()
            got = strategy.claim(
                queues=queues, limit=batch, worker_id="bench", now=timezone.now(), lease=lease
            )
            elapsed = time.perf_counter() - began
            transaction.set_rollback(True)
        if len(got) != batch:
            raise RuntimeError(f"claimed {len(got)} jobs, not {batch}")
        if i:  # the first one prepares the statement
            times.append(elapsed * 1000)
    sql = _start_sql(connection, "pick_every_queue" if queues is None else "pick_queues")
    params = {
        "queues": queues,
        "limit": batch,
        "worker": "bench",
        "lease": timezone.now() + lease,
        "now": timezone.now(),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
        transaction.set_rollback(True)
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    kinds = ("Shared Hit", "Shared Read", "Temp Read", "Temp Written")
    blocks = sum(top.get(f"{kind} Blocks", 0) for kind in kinds)
    return statistics.median(times), float(blocks)


def _server_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(connection, what, n: int) -> tuple[float, float]:
    """WAL bytes and server CPU microseconds per job of ``what()``, over ``n`` jobs."""
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
        cursor.execute("SELECT pg_backend_pid(), pg_current_wal_insert_lsn()")
        pid, lsn = cursor.fetchone()
    cpu = _server_cpu(pid)
    what()
    cpu = _server_cpu(pid) - cpu
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", [lsn])
        wal = float(cursor.fetchone()[0])
    return wal / n, cpu * 1e6 / n


def _writes(connection, jobs: int, rows: int, batch: int) -> dict[str, float]:
    from django.db import transaction
    from django.utils import timezone

    from asyncjobs import db, enqueue_many
    from asyncjobs.models import Attempt, Job
    from bench.tasks import noop

    strategy = db.for_alias("default")
    lease = timedelta(seconds=60)

    def single() -> None:
        for _ in range(jobs):
            noop.enqueue()

    def bulk() -> None:
        enqueue_many([(noop, (), {}) for _ in range(jobs)])

    def drain() -> None:
        while True:
            with transaction.atomic():
                got = strategy.claim(
                    queues=["default"],
                    limit=batch,
                    worker_id="bench",
                    now=timezone.now(),
                    lease=lease,
                )
            if not got:
                return
            now = timezone.now()
            with transaction.atomic():
                db.complete_succeeded(
                    "default", [(job, None, None, None, now) for job in got], worker_id="bench"
                )

    def statement() -> None:
        with connection.cursor() as cursor:
            cursor.execute(INSERT_SQL, {"n": rows})

    figures = {}
    for label, what, count in (
        ("INSERT ... SELECT of ready jobs", statement, rows),
        ("single enqueue", single, jobs),
        ("bulk enqueue", bulk, jobs),
        ("drain (claim + success)", drain, 2 * jobs),
    ):
        began = time.perf_counter()
        wal, cpu = _measure(connection, what, count)
        figures[f"{label}: WAL bytes/job"] = wal
        figures[f"{label}: server CPU us/job"] = cpu
        figures[f"{label}: wall us/job"] = (time.perf_counter() - began) * 1e6 / count
        if what is statement:
            Job.objects.filter(queue_name="default").delete()
            with connection.cursor() as cursor:
                cursor.execute("VACUUM asyncjobs_job")
    Attempt.objects.filter(job__queue_name="default").delete()
    Job.objects.filter(queue_name="default").delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM asyncjobs_job")
    return figures


if __name__ == "__main__":
    sys.exit(main())
