"""Batches at scale: a batch of 100,000 jobs enqueued with one ``enqueue_many`` (COPY on
PostgreSQL) and drained, against the same number of plain jobs, A/B interleaved on one
machine (plain, batch, batch, plain, ...), so that both see the same load.

    python bench/batches.py [--quick] [--runs 3] [--jobs 100000] [--workers 2]
                            [--checkout PATH]

PostgreSQL by default (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/asyncjobs_bench,
recreated); BENCH_SQLITE=1 for SQLite. For each variant: the enqueue rate (one
``enqueue_many`` in one transaction; for the batch, inside ``with batch(...)``, seal
included) and the drain rate (idle workers first; timed from the commit until no job is left
queued or running and, for the batch, until it finished and its on_complete callback ran).
Prints medians with min-max and the drain ratio batch / plain, and writes
bench/results/<time>-batches-<db>.json. No timing is asserted anywhere.

``--checkout PATH`` adds a third variant, ``batch-checkout``: the same batch drained by
workers running the asyncjobs of another checkout (an A/B of two commits' batch completion
in one interleaved run; enqueue and the schema are this checkout's).
"""

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import stop_workers  # noqa: E402
from bench.run import setup_django, start_workers  # noqa: E402


def reset() -> None:
    """Empty the jobs, attempts, workers and batches."""
    from django.db import connection

    from asyncjobs.models import Attempt, Batch, Job, Worker

    tables = [m._meta.db_table for m in (Attempt, Job, Worker, Batch)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
            cursor.execute(f"VACUUM ANALYZE {tables[1]}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


def wait_drained(deadline_s: float = 1200) -> None:
    from asyncjobs.models import Job

    deadline = time.monotonic() + deadline_s
    left = Job.objects.filter(status__in=["queued", "running"])
    while left.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"drain did not finish in {deadline_s} s")
        time.sleep(0.02)
    if Job.objects.filter(status="failed").exists():
        raise RuntimeError("some no-op jobs failed")


def run_plain(n: int, workers: int, concurrency: int) -> dict[str, float]:
    """Plain jobs: one enqueue_many in one transaction, then the drain."""
    from django.db import transaction

    from asyncjobs import enqueue_many
    from bench.tasks import noop

    reset()
    procs = start_workers(workers, concurrency)
    try:
        calls = [(noop, (), {}) for _ in range(n)]
        start = time.perf_counter()
        with transaction.atomic():
            enqueue_many(calls)
        committed = time.perf_counter()
        wait_drained()
        drained = time.perf_counter()
    finally:
        stop_workers(procs)
    return {"enqueue": n / (committed - start), "drain": n / (drained - committed)}


def run_batch(n: int, workers: int, concurrency: int, root: Path = ROOT) -> dict[str, float]:
    """One batch of ``n`` jobs: one enqueue_many inside ``with batch(...)`` (sealed in the
    same transaction), then the drain, until the batch finished and its callback ran."""
    from asyncjobs import batch
    from asyncjobs.models import Batch, Job
    from bench.tasks import batch_done, noop

    reset()
    procs = start_workers(workers, concurrency, root)
    try:
        calls = [(noop, (), {}) for _ in range(n)]
        start = time.perf_counter()
        with batch(on_complete=batch_done, description="bench") as b:
            b.enqueue_many(calls)
        committed = time.perf_counter()
        wait_drained()
        deadline = time.monotonic() + 120
        callback = Job.objects.filter(task_path=batch_done.module_path)
        while not callback.filter(status="succeeded").exists():
            if time.monotonic() > deadline:
                statuses = list(callback.values_list("status", "last_error_message"))
                raise RuntimeError(f"the batch's callback did not run: {statuses}")
            time.sleep(0.02)
        drained = time.perf_counter()
        row = Batch.objects.get(pk=b.id)
        if (row.total, row.succeeded, row.pending) != (n, n, 0) or row.finished_at is None:
            raise RuntimeError(f"batch counts wrong: {row.total} {row.succeeded} {row.pending}")
    finally:
        stop_workers(procs)
    return {"enqueue": n / (committed - start), "drain": n / (drained - committed)}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, one round (CI)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of plain+batch")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument("--checkout", help="also drain the batch with this checkout's workers")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs = 1, 2_000
    setup_django()
    from django.db import connection

    variants: dict[str, Callable[[int, int, int], dict[str, float]]] = {
        "plain": run_plain,
        "batch": run_batch,
    }
    if args.checkout:
        variants["batch-checkout"] = functools.partial(run_batch, root=Path(args.checkout))
    results: dict[str, dict[str, list[float]]] = {
        name: {"enqueue": [], "drain": []} for name in variants
    }
    for round_ in range(args.runs):
        # Each variant runs first in turn (ABBA for two).
        names = list(variants)
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        for name in order:
            figures = variants[name](args.jobs, args.workers, args.concurrency)
            for key, value in figures.items():
                results[name][key].append(value)
            print(
                f"round {round_ + 1} {name:14}: enqueue {figures['enqueue']:9,.0f} jobs/s, "
                f"drain {figures['drain']:7,.0f} jobs/s",
                flush=True,
            )
    table = {
        name: {key: summary(values) for key, values in figures.items()}
        for name, figures in results.items()
    }
    ratio = table["batch"]["drain"]["median"] / table["plain"]["drain"]["median"]
    ratios = {
        name: table[name]["drain"]["median"] / table["plain"]["drain"]["median"]
        for name in variants
        if name != "plain"
    }
    print(f"\n{args.jobs:,} jobs, {args.workers} workers x {args.concurrency}, {args.runs} rounds")
    for name, figures in table.items():
        for key, s in figures.items():
            print(
                f"{name:14} {key:7} median {s['median']:9,.0f}  "
                f"(min {s['min']:,.0f}, max {s['max']:,.0f}) jobs/s"
            )
    for name, value in ratios.items():
        print(f"drain ratio {name} / plain: {value:.3f}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stamp}-batches-{connection.vendor}.json"
    path.write_text(
        json.dumps(
            {
                "when": stamp,
                "database": connection.vendor,
                "machine": {"cpus": platform.machine(), "python": platform.python_version()},
                "jobs": args.jobs,
                "workers": args.workers,
                "concurrency": args.concurrency,
                "runs": args.runs,
                "results": results,
                "summary": table,
                "drain_ratio": ratio,
                "drain_ratios": ratios,
                "checkout": args.checkout,
            },
            indent=2,
        )
    )
    print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
