"""asyncjobs benchmark: enqueue rate, bulk enqueue rate, drain rate with 1 and 2 worker
processes, the rate of pruning jobs past their retention (by hand and by a worker), drain
rate with 100,000 not-yet-due or 1,000,000 finished jobs in the table (PostgreSQL),
enqueue-to-start latency on an idle worker, a worker's memory over many jobs.

    python bench/run.py [--quick] [--runs 3] [--jobs 10000] [--only drain_2,depth_future]

PostgreSQL by default (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/asyncjobs_bench,
created if missing); BENCH_SQLITE=1 for SQLite. Writes bench/results/<time>-<db>.json and
prints a table of medians with min-max. No timing here is asserted anywhere: figures are
compared as ratios in bench/README.md.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.common import recreate_database, stop_workers  # noqa: E402


def setup_django() -> None:
    if not os.environ.get("BENCH_SQLITE"):
        os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_bench")
        recreate_database(os.environ["DATABASE_URL"])
    else:
        for leftover in (ROOT / "bench" / "results").glob("bench.sqlite3*"):
            leftover.unlink()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def reset() -> None:
    from django.db import connection

    from asyncjobs.models import Attempt, Job, Worker

    tables = [m._meta.db_table for m in (Attempt, Job, Worker)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
            cursor.execute(f"VACUUM ANALYZE {tables[1]}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


def bench_enqueue(n: int) -> float:
    from bench.tasks import noop

    reset()
    start = time.perf_counter()
    for _ in range(n):
        noop.enqueue()
    return n / (time.perf_counter() - start)


def bench_bulk(n: int) -> float:
    from asyncjobs import enqueue_many
    from bench.tasks import noop

    reset()
    calls = [(noop, (), {}) for _ in range(n)]
    start = time.perf_counter()
    enqueue_many(calls)
    return n / (time.perf_counter() - start)


# More runworker options for every worker started (--worker-args), e.g. "--prefetch 0".
WORKER_ARGS: list[str] = []


def start_workers(count: int, concurrency: int, root: Path = ROOT) -> list[subprocess.Popen]:
    """``count`` worker processes of the asyncjobs in ``root`` (a checkout), once running."""
    from asyncjobs.models import Worker

    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "django", "runworker"),
                *("--concurrency", str(concurrency), *WORKER_ARGS),
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 60
    while Worker.objects.filter(status="running").count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start")
        time.sleep(0.05)
    time.sleep(0.5)  # let them reach their idle wait
    return procs


def bench_drain(n: int, workers: int, concurrency: int, *, keep: bool = False) -> float:
    """Idle workers first, then ``n`` jobs in one commit; timed until none is left queued or
    running (and an error if any failed). ``keep``: do not empty the tables first (depth runs
    fill them)."""
    if not keep:
        reset()
    procs = start_workers(workers, concurrency)
    try:
        return timed_drain(n)
    finally:
        stop_workers(procs)


def timed_drain(n: int) -> float:
    """Enqueue ``n`` no-op jobs in one commit for the running workers; the rate until none
    is left queued or running (an error if any failed)."""
    from asyncjobs import enqueue_many
    from asyncjobs.models import Job
    from bench.tasks import noop

    enqueue_many([(noop, (), {}) for _ in range(n)])
    start = time.perf_counter()
    deadline = time.monotonic() + 600
    # Asking whether any is left (queued or running: small partial indexes) rather than
    # counting what succeeded keeps the poll cheap with a million finished rows.
    left = Job.objects.filter(status__in=["queued", "running"])
    while left.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("drain did not finish in 600 s")
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if Job.objects.filter(status="failed").exists():
        raise RuntimeError("some no-op jobs failed")
    return n / elapsed


# Jobs that only sit in the table: not yet due (scheduled a day ahead) or long finished.
PENDING_SQL = """
INSERT INTO asyncjobs_job (
    id, backend, task_path, args, kwargs, queue_name, priority, status, enqueued_at, run_after,
    finished_at, attempts, max_attempts, free_attempts, backoff, retry_on, fail_on,
    last_error_class, last_error_message, worker_id, webhook_url, limit_key, limit_rate)
SELECT
    gen_random_uuid(), 'default', 'bench.tasks.noop', '[]', '{}', 'default', 0, %(status)s,
    now() - interval '1 hour',
    CASE WHEN %(status)s = 'scheduled' THEN now() + interval '1 day' + (g || ' ms')::interval
         ELSE now() - interval '1 hour' END,
    CASE WHEN %(status)s = 'succeeded' THEN now() - (g || ' ms')::interval END,
    CASE WHEN %(status)s = 'succeeded' THEN 1 ELSE 0 END, 3, 0, '{}', '[]', '[]',
    '', '', '', '', '', ''
FROM generate_series(1, %(n)s) AS g
"""


def bench_depth(n: int, workers: int, concurrency: int, status: str, pending: int) -> float:
    """The drain rate with ``pending`` jobs of ``status`` already in the table, inserted
    right before (no ANALYZE: the planner still believes the table is empty, as it does
    after a burst of inserts until autovacuum comes by)."""
    from django.db import connection

    reset()
    with connection.cursor() as cursor:
        cursor.execute(PENDING_SQL, {"status": status, "n": pending})
    return bench_drain(n, workers, concurrency, keep=True)


def insert_finished(n: int, *, days_ago: int = 30) -> None:
    """``n`` jobs that succeeded ``days_ago`` days ago (by default past the default retention
    of 7 days), each with one attempt (through the ORM, so on either database)."""
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from asyncjobs.models import Attempt, Job

    old = timezone.now() - timedelta(days=days_ago)
    jobs = [
        Job(
            id=uuid.uuid4(),
            task_path="bench.tasks.noop",
            status="succeeded",
            enqueued_at=old,
            run_after=old,
            started_at=old,
            finished_at=old + timedelta(milliseconds=i),
            attempts=1,
        )
        for i in range(n)
    ]
    Job.objects.bulk_create(jobs, batch_size=2_000)
    Attempt.objects.bulk_create(
        [Attempt(job=job, number=1, worker_id="w", started_at=old) for job in jobs],
        batch_size=2_000,
    )


def bench_prune(n: int) -> float:
    """The rate at which ``prune_jobs`` deletes ``n`` jobs past their retention, in batches
    of ``PRUNE_BATCH_SIZE``, as ``manage.py prunejobs`` does."""
    from datetime import timedelta

    from django.utils import timezone

    from asyncjobs import services
    from asyncjobs.conf import jobs_settings

    reset()
    insert_finished(n)
    start = time.perf_counter()
    pruned = services.prune_jobs(
        now=timezone.now(),
        older_than={"succeeded": timedelta(days=7)},
        batch_size=jobs_settings.PRUNE_BATCH_SIZE,
    )
    elapsed = time.perf_counter() - start
    if pruned != {"succeeded": n}:
        raise RuntimeError(f"pruned {pruned}, not {n}")
    return n / elapsed


def wait_for_pruning(backlog: int) -> None:
    """Wait (10 minutes at most) until the workers' maintenance has deleted some of the
    ``backlog`` finished jobs: its first round comes at a random time within
    MAINTENANCE_INTERVAL."""
    from asyncjobs.models import Job

    deadline = time.monotonic() + 600
    while Job.objects.count() == backlog:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not start pruning")
        time.sleep(0.05)


def bench_drain_backlog(
    n: int, backlog: int, workers: int, concurrency: int, *, pruning: bool
) -> float:
    """The drain rate of ``n`` jobs with ``backlog`` finished jobs in the table: past their
    retention and pruned by the workers' maintenance meanwhile (``pruning``; the drain starts
    once pruning has, and as a round prunes for a second then pauses for one, ``n`` should
    take a few seconds), or a day old and kept (the same table without the pruning)."""

    reset()
    insert_finished(backlog, days_ago=30 if pruning else 1)
    procs = start_workers(workers, concurrency)
    try:
        if pruning:
            wait_for_pruning(backlog)
        return timed_drain(n)
    finally:
        stop_workers(procs)


def bench_prune_worker(n: int) -> float:
    """The rate at which one idle worker's maintenance prunes a backlog of ``n`` jobs past
    their retention: from its first deletion (its first maintenance round comes at a random
    time within MAINTENANCE_INTERVAL) until none is left."""
    from asyncjobs.models import Job

    reset()
    insert_finished(n)
    procs = start_workers(1, 4)
    try:
        wait_for_pruning(n)
        start = time.perf_counter()
        deadline = time.monotonic() + 600
        while Job.objects.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not prune the backlog in 600 s")
            time.sleep(0.05)
        return n / (time.perf_counter() - start)
    finally:
        stop_workers(procs)


def bench_latency(samples: int) -> list[float]:
    """Enqueue-to-start on an idle worker, as the peer comparison defines it: from the
    client's clock just before ``enqueue()`` to the task's first line (bench/latency.py's
    probe), so the claim's commit and the hand-off to a slot count too."""
    import tempfile

    from bench import latency
    from bench.tasks import noop

    reset()
    probe = Path(tempfile.mkstemp(prefix="latency-", suffix=".txt")[1])
    os.environ["BENCH_LATENCY_FILE"] = str(probe)
    procs = start_workers(1, 1)
    try:
        for n in range(1, samples + 1):
            noop.enqueue(time.time())
            deadline = time.monotonic() + 30
            while len(latency.read(str(probe))) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("job did not start in 30 s")
                time.sleep(0.001)
            time.sleep(0.05)
        return [delay * 1000 for delay in latency.read(str(probe))]
    finally:
        stop_workers(procs)
        os.environ.pop("BENCH_LATENCY_FILE", None)
        probe.unlink(missing_ok=True)


def worker_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bench_memory(n: int, concurrency: int) -> dict[str, object]:
    """One worker process runs ``n`` jobs; its resident size is sampled as it goes. Flat
    means the size after the first 10% (imports, caches, connection warmed up) is where it
    stays."""
    from asyncjobs import enqueue_many
    from asyncjobs.models import Job
    from bench.tasks import noop

    reset()
    for start in range(0, n, 10_000):
        enqueue_many([(noop, (), {}) for _ in range(min(10_000, n - start))])
    procs = start_workers(1, concurrency)
    samples: list[tuple[int, float]] = []
    try:
        pid = procs[0].pid
        began = time.perf_counter()
        deadline = time.monotonic() + 3600
        done = 0
        while done < n:
            if time.monotonic() > deadline:
                raise RuntimeError("memory run did not finish in an hour")
            done = Job.objects.filter(status="succeeded").count()
            samples.append((done, worker_rss_mib(pid)))
            time.sleep(0.5)
        elapsed = time.perf_counter() - began
        samples.append((n, worker_rss_mib(pid)))
    finally:
        stop_workers(procs)
    warm = next(rss for count, rss in samples if count >= n // 10)
    return {
        "jobs": n,
        "jobs_per_s": n / elapsed,
        "rss_mib_at_10pct": round(warm, 1),
        "rss_mib_at_end": round(samples[-1][1], 1),
        "rss_mib_max": round(max(rss for _, rss in samples), 1),
        "growth_after_warmup_mib": round(samples[-1][1] - warm, 1),
        "samples": [(count, round(rss, 1)) for count, rss in samples],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(round(q * (len(ordered) - 1)), len(ordered) - 1)
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (for CI)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument(
        "--memory-jobs", type=int, default=100_000, help="jobs for the memory run (0: skip)"
    )
    parser.add_argument(
        "--depth-future", type=int, default=100_000, help="not-yet-due jobs for a depth run"
    )
    parser.add_argument(
        "--depth-finished", type=int, default=1_000_000, help="finished jobs for a depth run"
    )
    parser.add_argument(
        "--prune-jobs", type=int, default=50_000, help="jobs past their retention to prune"
    )
    parser.add_argument(
        "--prune-worker-jobs",
        type=int,
        default=100_000,
        help="jobs past their retention for a worker's maintenance to prune",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated workloads to run (enqueue, bulk, drain_1, drain_2, prune, "
        "prune_worker, drain_backlog, drain_pruning, depth_future, depth_finished, latency); "
        "default all",
    )
    parser.add_argument(
        "--worker-args",
        default="",
        help='more runworker options for every worker, e.g. "--prefetch 0" (for A/B runs)',
    )
    args = parser.parse_args()
    WORKER_ARGS[:] = shlex.split(args.worker_args)
    if args.quick:
        args.runs, args.jobs, args.latency_samples = 1, 300, 10
        args.memory_jobs = min(args.memory_jobs, 2_000)
        args.depth_future, args.depth_finished = 1_000, 10_000
        args.prune_jobs = min(args.prune_jobs, 2_000)
        args.prune_worker_jobs = min(args.prune_worker_jobs, 2_000)
    setup_django()
    from django.db import connection

    workloads = {
        "enqueue": ("enqueue one at a time (jobs/s)", lambda: bench_enqueue(args.jobs)),
        "bulk": ("bulk enqueue (jobs/s)", lambda: bench_bulk(args.jobs)),
        "drain_1": (
            "drain, 1 worker process (jobs/s)",
            lambda: bench_drain(args.jobs, 1, args.concurrency),
        ),
        "drain_2": (
            "drain, 2 worker processes (jobs/s)",
            lambda: bench_drain(args.jobs, 2, args.concurrency),
        ),
        "prune": (
            f"prune {args.prune_jobs:,} jobs past retention (jobs/s)",
            lambda: bench_prune(args.prune_jobs),
        ),
        "prune_worker": (
            f"a worker prunes {args.prune_worker_jobs:,} jobs past retention (jobs/s)",
            lambda: bench_prune_worker(args.prune_worker_jobs),
        ),
        "drain_backlog": (
            f"drain, 2 procs, {args.prune_worker_jobs * 2:,} finished kept (jobs/s)",
            lambda: bench_drain_backlog(
                args.jobs * 3, args.prune_worker_jobs * 2, 2, args.concurrency, pruning=False
            ),
        ),
        "drain_pruning": (
            f"drain, 2 procs, {args.prune_worker_jobs * 2:,} finished pruned (jobs/s)",
            lambda: bench_drain_backlog(
                args.jobs * 3, args.prune_worker_jobs * 2, 2, args.concurrency, pruning=True
            ),
        ),
    }
    if connection.vendor == "postgresql":
        workloads["depth_future"] = (
            f"drain, 2 procs, {args.depth_future:,} not-yet-due pending (jobs/s)",
            lambda: bench_depth(args.jobs, 2, args.concurrency, "scheduled", args.depth_future),
        )
        workloads["depth_finished"] = (
            f"drain, 2 procs, {args.depth_finished:,} finished in table (jobs/s)",
            lambda: bench_depth(args.jobs, 2, args.concurrency, "succeeded", args.depth_finished),
        )
    only = set(args.only.split(",")) if args.only else {*workloads, "latency"}
    if unknown := only - {*workloads, "latency"}:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {sorted(workloads)}, latency")
    workloads = {key: value for key, value in workloads.items() if key in only}
    results: dict[str, list[float]] = {label: [] for label, _ in workloads.values()}
    latencies: list[float] = []
    for run in range(args.runs):
        for label, fn in workloads.values():
            results[label].append(fn())
            print(f"run {run + 1}/{args.runs} {label}: {results[label][-1]:,.0f}", flush=True)
        if "latency" in only:
            latencies += bench_latency(args.latency_samples)
    memory = bench_memory(args.memory_jobs, args.concurrency) if args.memory_jobs else None
    reset()
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": connection.vendor,
        "server_version": getattr(connection, "pg_version", None),
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "jobs": args.jobs,
        "runs": args.runs,
        "concurrency": args.concurrency,
        "workloads": {name: summary(values) for name, values in results.items()},
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p95": percentile(latencies, 0.95),
            "max": max(latencies),
            "samples": len(latencies),
        }
        if latencies
        else None,
        "memory": memory,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    prefix = "quick-" if args.quick else ""
    name = f"{prefix}{report['when'].replace(':', '')}-{connection.vendor}.json"
    (out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nasyncjobs on {connection.vendor}, {args.jobs:,} jobs, {args.runs} runs")
    print(f"{'workload':62} {'median':>10} {'min-max':>22}")
    for wl, s in report["workloads"].items():
        print(f"{wl:62} {s['median']:>10,.0f} {s['min']:>10,.0f}-{s['max']:<10,.0f}")
    if lat := report["latency_ms"]:
        label = "enqueue-to-start latency p50 / p95 (ms)"
        print(f"{label:62} {lat['p50']:>10.1f} {lat['p95']:>10.1f}")
    if "drain_2" in workloads:
        empty = report["workloads"][workloads["drain_2"][0]]["median"]
        for key in ("depth_future", "depth_finished"):
            if key in workloads:
                depth = report["workloads"][workloads[key][0]]["median"]
                print(f"{key}: {depth / empty:.0%} of the empty-table drain (medians)")
    if memory:
        print(
            f"worker RSS over {memory['jobs']:,} jobs (MiB): {memory['rss_mib_at_10pct']} at 10%, "
            f"{memory['rss_mib_at_end']} at the end, max {memory['rss_mib_max']} "
            f"(growth after warm-up {memory['growth_after_warmup_mib']})"
        )
    print(f"results: bench/results/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
