"""The WAL a job writes over its whole life on PostgreSQL, and what its claim and completion
statements write: figures that do not move with the machine's load.

    python bench/wal_per_job.py [--jobs 2000] [--rounds 3] [--before 0013] [--statements 20]

Per round, for the schema at migration ``--before`` and at the latest migration, taking
turns (the same code, only the indexes differ): empty the tables, CHECKPOINT, then
``--jobs`` single enqueues (one transaction each) and one ``runworker --burst`` draining
them (concurrency 4), each phase measured by ``pg_stat_wal`` (records, full-page images,
bytes) before and after. Then ``--statements`` jobs claimed and completed one at a time by
the worker's own statements (``start``, ``complete_succeeded``) under ``EXPLAIN (ANALYZE,
BUFFERS, WAL)``: WAL records and bytes of each statement's job and attempt writes, and its
buffer hits, medians. Prints a table and writes bench/results/wal-<time>.json.

``pg_stat_wal`` counts the whole server's WAL: point ``DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/asyncjobs_bench_wal``, dropped and created afresh) at
a server that nothing else writes to meanwhile (a private one on another port), with
autovacuum off and checkpoints far apart (``checkpoint_timeout = 1h``, ``max_wal_size =
8GB``), or the figures count others' writes too.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ["DATABASE_URL"] = os.environ.get(
    "BENCH_WAL_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_bench_wal"
)

from bench.common import recreate_database  # noqa: E402

WAL_SQL = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"


def wal() -> tuple[int, int, int]:
    """The server's WAL counters (records, full-page images, bytes) now. A backend hands its
    counts to ``pg_stat_wal`` at most once a second, and at its exit: this one is made to
    hand them over first (the workers' have exited)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(WAL_SQL)
        records, fpi, size = cursor.fetchone()
    return int(records), int(fpi), int(size)


def per_job(before: tuple[int, int, int], after: tuple[int, int, int], n: int) -> dict:
    return {
        name: (b - a) / n
        for name, a, b in zip(("records", "fpi", "bytes"), before, after, strict=True)
    }


def migrate_to(target: str | None) -> None:
    from django.core.management import call_command

    if target:
        call_command("migrate", "asyncjobs", target, verbosity=0)
    else:
        call_command("migrate", verbosity=0)


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE asyncjobs_attempt, asyncjobs_job, asyncjobs_worker")
        cursor.execute("VACUUM ANALYZE asyncjobs_job")
        cursor.execute("VACUUM ANALYZE asyncjobs_attempt")
        cursor.execute("CHECKPOINT")


def life(n: int) -> dict[str, dict]:
    """WAL per job: ``n`` single enqueues, then a burst worker draining them."""
    from asyncjobs.models import Job
    from bench.tasks import noop

    reset()
    start = wal()
    for _ in range(n):
        noop.enqueue()
    enqueued = wal()
    subprocess.run(
        [sys.executable, "-m", "django", "runworker", "--burst", "--concurrency", "4"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    drained = wal()
    done = Job.objects.filter(status="succeeded").count()
    if done != n:
        raise RuntimeError(f"{done} of {n} jobs succeeded")
    return {
        "enqueue": per_job(start, enqueued, n),
        "drain": per_job(enqueued, drained, n),
        "life": per_job(start, drained, n),
    }


def _modify_nodes(plan: dict) -> list[dict]:
    found = [plan] if plan.get("Node Type") == "ModifyTable" else []
    for child in plan.get("Plans", []):
        found += _modify_nodes(child)
    return found


def _explain(sql: str, params: dict) -> dict[str, Any]:
    """One statement under EXPLAIN (ANALYZE, BUFFERS, WAL), committed: per table written, WAL
    records and bytes; the statement's buffer hits and execution time."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + sql, params)
        (raw,) = cursor.fetchone()
    (top,) = json.loads(raw) if isinstance(raw, str) else raw
    figures: dict[str, Any] = {
        "execution_ms": top["Execution Time"],
        "buffer_hits": top["Plan"]["Shared Hit Blocks"],
    }
    for node in _modify_nodes(top["Plan"]):
        table = node["Relation Name"].removeprefix("asyncjobs_")
        figures[f"{table}_wal_records"] = node["WAL Records"]
        figures[f"{table}_wal_bytes"] = node["WAL Bytes"]
    return figures


def statements(n: int) -> dict[str, dict[str, float]]:
    """The worker's claim and completion statements, one job at a time, ``n`` times."""
    from django.db import connection
    from django.utils import timezone

    from asyncjobs.db.postgresql import _complete_sql, _start_sql
    from bench.tasks import noop

    start_sql = _start_sql(connection, "pick_queues")
    # (binary array parameters need psycopg's own cursor; Django's binds them as text)
    complete_sql = _complete_sql(connection, False).replace(")b::", ")s::")
    worker = f"wal:{uuid.uuid4().hex[:8]}"
    claims, completions = [], []
    for _ in range(n):
        noop.enqueue()
        now = timezone.now()
        claims.append(
            _explain(
                start_sql,
                {
                    "queues": ["default"],
                    "limit": 1,
                    "worker": worker,
                    "lease": now + timedelta(minutes=5),
                    "now": now,
                },
            )
        )
        from asyncjobs.models import Job

        job = Job.objects.get(status="running", worker_id=worker)
        completions.append(
            _explain(
                complete_sql,
                {
                    "ids": [job.pk],
                    "numbers": [job.attempts],
                    "statuses": [None],
                    "starts": [None],
                    "ends": [timezone.now()],
                    "values": ["null"],
                    "worker": worker,
                },
            )
        )
    return {
        "claim": {k: statistics.median(f[k] for f in claims) for k in claims[0]},
        "completion": {k: statistics.median(f[k] for f in completions) for k in completions[0]},
    }


def index_sizes() -> dict[str, int]:
    """The indexes of the job and attempt tables, by name: their size in bytes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "WHERE indrelid IN ('asyncjobs_job'::regclass, 'asyncjobs_attempt'::regclass) "
            "ORDER BY 1"
        )
        return dict(cursor.fetchall())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", type=int, default=20)
    parser.add_argument(
        "--before", default="0013", help="the migration of the schema to compare with"
    )
    args = parser.parse_args()

    recreate_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    migrate_to(None)
    variants = {f"at {args.before}": args.before, "latest": None}
    runs: dict[str, list] = {name: [] for name in variants}
    sizes: dict[str, dict[str, int]] = {}
    for round_ in range(args.rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            migrate_to(variants[name])
            figures: dict[str, Any] = life(args.jobs)
            sizes[name] = index_sizes()
            figures.update(statements(args.statements))
            runs[name].append(figures)
            print(f"round {round_ + 1}, {name}: {json.dumps(figures)}", flush=True)
    migrate_to(None)

    def median(name: str, phase: str, key: str) -> float:
        return statistics.median(run[phase][key] for run in runs[name])

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs": args.jobs,
        "rounds": args.rounds,
        "statements": args.statements,
        "runs": runs,
        "index_sizes_after_a_life": sizes,
        "medians": {
            name: {
                phase: {key: median(name, phase, key) for key in runs[name][0][phase]}
                for phase in runs[name][0]
            }
            for name in variants
        },
    }
    print()
    for phase in ("enqueue", "drain", "life"):
        for key in ("records", "fpi", "bytes"):
            cells = "  ".join(f"{median(name, phase, key):10.1f}" for name in variants)
            print(f"per job, {phase:8} {key:8} {cells}")
    for phase in ("claim", "completion"):
        for key in runs[order[0]][0][phase]:
            cells = "  ".join(f"{median(name, phase, key):10.2f}" for name in variants)
            print(f"{phase:10} {key:22} {cells}")
    print("columns: " + ", ".join(variants))
    out = ROOT / "bench" / "results" / f"wal-{report['when'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
