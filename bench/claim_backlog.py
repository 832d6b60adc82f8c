"""A claim with a deep backlog of ready jobs, and what the every-queue claim index costs the
writes: the same database with and without ``asyncjobs_job_claim_all``, taking turns.

    python bench/claim_backlog.py [--ready 200000] [--queues 8] [--claims 30] [--batch 10]
        [--rows 100000] [--singles 1000] [--runs 3]

The backlog: ``--ready`` ready jobs spread over ``--queues`` queues (q0, q1, ...) with
priorities from -10 to 10, inserted in one statement and analyzed. Then, each run, once
without the index and once with it (dropped and built between the two; the order alternates
from run to run):

- claims: ``--claims`` claims of ``--batch`` jobs by a worker of every queue, of one queue,
  and of every queue named (``pick_queues``), each rolled back (so every claim sees the same
  backlog): the median wall time of the claim's statement, and the buffers it touched and
  the WAL records it wrote (``EXPLAIN (ANALYZE, BUFFERS, WAL)`` of the same statement: the
  same in any load);
- writes: one ``INSERT ... SELECT`` of ``--rows`` new ready jobs (due now, in enqueue
  order, at three priorities) and ``--singles`` one-row INSERTs of such a job, each under
  ``EXPLAIN (ANALYZE, WAL)``: per job, the WAL records, full-page images and bytes that
  statement wrote (its own, whatever other sessions write to the server meanwhile) and its
  execution time; then the jobs are deleted and the table vacuumed.

PostgreSQL only: the database of DATABASE_URL, migrated, its jobs and attempts truncated
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
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--singles", type=int, default=1000)
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
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Attempt._meta.db_table}, {Job._meta.db_table} CASCADE")
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
                wall, blocks, records = _claims(connection, queues, args.claims, args.batch)
                figures[f"claim ms, {label}"] = wall
                figures[f"claim buffers, {label}"] = blocks
                figures[f"claim WAL records, {label}"] = records
            figures.update(_writes(connection, args.rows, args.singles))
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


def _claims(connection, queues, claims: int, batch: int) -> tuple[float, float, float]:
    """The median wall time (ms) of ``claims`` claims, each rolled back, and the buffers
    the claim's statement touched and the WAL records it wrote."""
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
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
        transaction.set_rollback(True)
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    kinds = ("Shared Hit", "Shared Read", "Temp Read", "Temp Written")
    blocks = sum(top.get(f"{kind} Blocks", 0) for kind in kinds)
    return statistics.median(times), float(blocks), float(top["WAL Records"])


def _writes(connection, rows: int, singles: int) -> dict[str, float]:
    """Per job, what storing new ready jobs cost the server: ``EXPLAIN (ANALYZE, WAL)`` of
    the INSERT itself (its own WAL, not the cluster's: other sessions may write meanwhile),
    one ``INSERT ... SELECT`` of ``rows`` jobs and ``singles`` one-row INSERTs. The jobs
    are deleted and the table vacuumed after."""
    figures = {}
    for label, n, times in (("INSERT of many", rows, 1), ("one-row INSERT", 1, singles)):
        records = fpi = size = ms = 0.0
        for _ in range(times):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + INSERT_SQL, {"n": n})
                (plan,) = cursor.fetchone()
            plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]
            records += plan["Plan"]["WAL Records"]
            fpi += plan["Plan"]["WAL FPI"]
            size += plan["Plan"]["WAL Bytes"]
            ms += plan["Execution Time"]
        jobs = n * times
        figures[f"{label}: WAL records/job"] = records / jobs
        figures[f"{label}: WAL full pages/1,000 jobs"] = fpi * 1000 / jobs
        figures[f"{label}: WAL bytes/job"] = size / jobs
        figures[f"{label}: server us/job"] = ms * 1000 / jobs
    with connection.cursor() as cursor:  # (no attempts: a plain DELETE, not the ORM's)
        cursor.execute("DELETE FROM asyncjobs_job WHERE queue_name = 'default'")
        cursor.execute("VACUUM asyncjobs_job")
    return figures


if __name__ == "__main__":
    sys.exit(main())
