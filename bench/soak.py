"""The soak run: a steady load for a long time, to see whether a database queue degrades.

A job table's enemy in production is bloat: dead tuples in the table and its indexes,
autovacuum falling behind, the claim slowing down hour after hour. This run enqueues jobs
one at a time from client threads at a steady rate, has worker processes run them (1% fail
their first attempt and are retried), keeps succeeded jobs for one minute (the workers'
maintenance prunes them), and every minute records:

- pickup latency p50/p95 (enqueue call to the task's first line, first attempts only),
- the rate achieved and the drain lag (ready jobs waiting, age of the oldest),
- the job and attempt tables' size and their indexes' size,
- dead tuples and autovacuum/autoanalyze runs (pg_stat_user_tables), and pgstattuple's
  dead and free share of each table where the extension can be created,
- the pages the claim's index walk touches (what bloat would slow, apart from the load),
- each worker's resident memory, and the machine's load average.

Then the rate doubles for a few minutes (a surge) and falls back (recovery), to show how it
degrades and recovers. Writes bench/results/soak-<time>.json and a PNG of the four series
(docs/soak.png by default; matplotlib, the ``bench`` extra), and prints verdicts against the
goals: p95 of the last 5 minutes within 25% of the first 5 after warm-up, table + index size
flat (within 20%) after the first 5 minutes, RSS flat. Nothing is asserted: it is a
measurement.

    python bench/soak.py [--minutes 30] [--rate 1000] [--surge-minutes 5] [--quick]

PostgreSQL only (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/asyncjobs_soak,
dropped and created at the start), with autovacuum on as in production (the run warns if it
is off). --reloptions, --retention-minutes and --prefill make A/B runs of per-table
autovacuum settings (bench/README.md).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_soak")
os.environ["BENCH_SOAK"] = "1"  # bench/settings.py: one minute of retention, soak tasks
os.environ["BENCH_APP_NAME"] = "asyncjobs-bench-client"  # (bench/cpu_meter.py's CLIENT_APP)

from bench.common import recreate_database, stop_workers  # noqa: E402
from bench.cpu_meter import WORKER_APP, CpuMeter, cost_line  # noqa: E402
from bench.soak_plot import plot  # noqa: E402

WARM_UP_MINUTES = 2
GOAL_WINDOW_MINUTES = 5
TABLES = ("asyncjobs_job", "asyncjobs_attempt")


class Enqueuer(threading.Thread):
    """Enqueues jobs one at a time at ``rate()`` jobs per second, paced by the clock (a
    thread that falls behind catches up without sleeping, so the rate achieved shows when
    the clients cannot keep up)."""

    def __init__(self, rate, stop: threading.Event, fail_every: int, offset: int) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.stop = stop
        self.fail_every = fail_every
        self.offset = offset
        self.sent = 0
        self.errors: list[str] = []

    def run(self) -> None:
        from django.db import connection

        from bench.soak_tasks import soak

        due = time.monotonic()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if due > now:
                    self.stop.wait(due - now)
                    continue
                serial = self.offset + self.sent
                soak.enqueue(time.time(), fail=serial % self.fail_every == 0)
                self.sent += 1
                due += 1.0 / self.rate()
                due = max(due, time.monotonic() - 1.0)  # no burst after a stall
        except Exception as exc:  # reported with the results, not lost in a thread
            self.errors.append(repr(exc))
        finally:
            connection.close()


def start_workers(
    count: int, concurrency: int, latency_file: Path, checkout: Path | str = ROOT
) -> list[subprocess.Popen]:
    """bench/run.py's workers, recording their tasks' pickup latency into ``latency_file``,
    run from ``checkout`` (another commit's tree, for an A/B of the worker)."""
    from bench import run as bench_run

    os.environ["BENCH_LATENCY_FILE"] = str(latency_file)
    client_app, os.environ["BENCH_APP_NAME"] = os.environ["BENCH_APP_NAME"], WORKER_APP
    try:
        return bench_run.start_workers(count, concurrency, Path(checkout))
    finally:
        os.environ["BENCH_APP_NAME"] = client_app


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def prefill(n: int) -> None:
    """``n`` jobs that succeeded in the last ``n`` ms, one attempt each, then VACUUM ANALYZE:
    the table of a queue that keeps its finished jobs for days (with --retention-minutes
    past the run), as autovacuum last left it."""
    from django.db import connection

    from bench.run import PENDING_SQL

    with connection.cursor() as cursor:
        cursor.execute(PENDING_SQL, {"status": "succeeded", "n": n})
        cursor.execute(
            "INSERT INTO asyncjobs_attempt (number, worker_id, started_at, finished_at,"
            " outcome, error_class, error_message, traceback, job_id)"
            " SELECT 1, 'w', finished_at, finished_at, 'succeeded', '', '', '', id"
            " FROM asyncjobs_job"
        )
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")


def apply_reloptions(choice: str) -> None:
    """``--reloptions``: "asis" leaves the tables as the migrations made them; "reset" drops
    any autovacuum storage parameters (the server's settings apply); else "name=value,..."
    is set on both tables (an A/B of per-table autovacuum settings)."""
    if choice == "asis":
        return
    from django.db import connection

    with connection.cursor() as cursor:
        for table in TABLES:
            if choice == "reset":
                cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [table])
                names = [o.split("=")[0] for o in cursor.fetchone()[0] or []]
                if names:
                    cursor.execute(f"ALTER TABLE {table} RESET ({', '.join(names)})")
            else:
                cursor.execute(f"ALTER TABLE {table} SET ({choice})")


def server_settings() -> dict:
    """The server's autovacuum settings and the tables' own (reloptions): what the soak's
    autovacuum figures depend on."""
    from django.db import DatabaseError, connection, transaction

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting FROM pg_settings WHERE name LIKE 'autovacuum%%'"
            " OR name IN ('shared_buffers', 'synchronous_commit', 'fsync') ORDER BY name"
        )
        settings: dict = dict(cursor.fetchall())
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [list(TABLES)]
        )
        settings["reloptions"] = {name: options or [] for name, options in cursor.fetchall()}
        try:  # pgstattuple measures bloat exactly (contrib; needs the right to create it)
            with transaction.atomic():
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            settings["pgstattuple"] = True
        except DatabaseError:
            settings["pgstattuple"] = False
    return settings


def table_stats(with_pgstattuple: bool = False) -> dict[str, dict[str, float]]:
    from django.db import connection

    stats = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        for table in TABLES:
            cursor.execute(
                "SELECT pg_relation_size(%s), pg_indexes_size(%s), n_live_tup, n_dead_tup,"
                " autovacuum_count, autoanalyze_count FROM pg_stat_user_tables"
                " WHERE relname = %s",
                [table, table, table],
            )
            size, indexes, live, dead, vacuums, analyzes = cursor.fetchone()
            stats[table] = {
                "table_mib": size / 2**20,
                "index_mib": indexes / 2**20,
                "live": live,
                "dead": dead,
                "autovacuums": vacuums,
                "autoanalyzes": analyzes,
            }
            if with_pgstattuple:
                # The share of the table that is dead rows and free space: bloat, measured
                # (reads the whole table, a few MiB here).
                cursor.execute(
                    "SELECT dead_tuple_percent, free_percent FROM pgstattuple(%s)", [table]
                )
                stats[table]["dead_pct"], stats[table]["free_pct"] = cursor.fetchone()
    return stats


# The claim's own index walk, read only (no FOR UPDATE): the pages it touches measure what
# dead entries cost the claim, whatever the machine's load does to its time.
CLAIM_PROBE = (
    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM asyncjobs_job"
    " WHERE status = 'queued' AND limit_key = ''"
    " ORDER BY priority DESC, run_after, enqueued_at LIMIT 16"
)


def claim_probe() -> dict[str, float]:
    """Pages touched (the fewest of 3) and time (the median) of the claim's index walk."""
    from django.db import connection

    runs = []
    with connection.cursor() as cursor:
        for _ in range(3):
            cursor.execute(CLAIM_PROBE)
            plan = cursor.fetchone()[0][0]
            pages = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
            runs.append((pages, plan["Execution Time"]))
    return {"claim_pages": min(r[0] for r in runs), "claim_ms": sorted(r[1] for r in runs)[1]}


def drain_lag() -> dict[str, float]:
    from django.db.models import Min
    from django.utils import timezone

    from asyncjobs.models import Job

    now = timezone.now()
    ready = Job.objects.filter(status="queued", run_after__lte=now)
    oldest = ready.aggregate(oldest=Min("run_after"))["oldest"]
    return {
        "ready": ready.count(),
        "oldest_ready_s": (now - oldest).total_seconds() if oldest else 0.0,
    }


def read_new_latencies(path: Path, offset: int) -> tuple[list[float], int]:
    """The delays (ms) appended to the probe file since ``offset``; the new offset (a line
    still being written is left for the next read)."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as probe:
        probe.seek(offset)
        data = probe.read()
    end = data.rfind(b"\n") + 1
    delays = [float(line.split()[1]) * 1000 for line in data[:end].decode().splitlines() if line]
    return delays, offset + end


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict:
    recreate_database(os.environ["DATABASE_URL"])
    os.environ["BENCH_SOAK_RETENTION_MINUTES"] = str(args.retention_minutes)  # the workers'
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    apply_reloptions(args.reloptions)
    if args.prefill:
        prefill(args.prefill)
    server = server_settings()
    if server.get("autovacuum") != "on":
        print(
            "WARNING: autovacuum is off on this server: the soak measures a table nobody"
            " vacuums (not production); point DATABASE_URL at a server with autovacuum on",
            flush=True,
        )

    # This run's own file: two runs at once (another database) must not read each other's.
    handle, name = tempfile.mkstemp(prefix="asyncjobs-soak-latency-", suffix=".txt")
    os.close(handle)
    latency_file = Path(name)

    phases = [("steady", args.minutes, args.rate)]
    if args.surge_minutes:
        phases += [
            ("surge", args.surge_minutes, args.rate * args.surge_factor),
            ("recovery", args.recovery_minutes, args.rate),
        ]
    current = {"rate": float(args.rate)}
    stop = threading.Event()
    clients = [
        Enqueuer(
            lambda: current["rate"] / args.clients,
            stop,
            fail_every=args.fail_every,
            offset=i * 10**9,
        )
        for i in range(args.clients)
    ]
    procs = start_workers(args.workers, args.concurrency, latency_file, args.worker_checkout)
    samples: list[dict] = []
    offset = 0
    minute = 0
    meter = CpuMeter([p.pid for p in procs])
    readings = []
    try:
        readings.append(meter.read())
        for client in clients:
            client.start()
        for phase, minutes, rate in phases:
            current["rate"] = float(rate)
            for _ in range(minutes):
                sent_before = sum(c.sent for c in clients)
                stop.wait(args.sample_seconds)
                minute += 1
                delays, offset = read_new_latencies(latency_file, offset)
                sent = sum(c.sent for c in clients) - sent_before
                readings.append(meter.read())
                sample = {
                    "minute": minute,
                    "time": time.time(),
                    "phase": phase,
                    "target_rate": rate,
                    "enqueued_rate": sent / args.sample_seconds,
                    "sent": sent,
                    "started": len(delays),
                    "p50_ms": percentile(delays, 0.50),
                    "p95_ms": percentile(delays, 0.95),
                    **drain_lag(),
                    **claim_probe(),
                    "tables": table_stats(server["pgstattuple"]),
                    "rss_mib": [rss_mib(p.pid) for p in procs],
                    "load": os.getloadavg()[0],
                    "cost": CpuMeter.per_job(readings[-2], readings[-1], sent),
                }
                samples.append(sample)
                print(summary_line(sample), flush=True)
                print(f"        {cost_line(sample['cost'])}", flush=True)
                if any(c.errors for c in clients):
                    raise RuntimeError(f"enqueue failed: {[c.errors for c in clients]}")
    finally:
        stop.set()
        for client in clients:
            client.join(10)
        stop_workers(procs)
        latency_file.unlink(missing_ok=True)
    from django.db import connection

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "postgresql": connection.pg_version,
        "server": server,
        "settings": {
            key: getattr(args, key)
            for key in (
                "minutes",
                "rate",
                "surge_minutes",
                "surge_factor",
                "recovery_minutes",
                "workers",
                "concurrency",
                "clients",
                "fail_every",
                "sample_seconds",
                "reloptions",
                "retention_minutes",
                "prefill",
                "worker_checkout",
            )
        },
        "samples": samples,
        "verdicts": verdicts(samples),
        "cost": steady_cost(samples, readings),
    }


def steady_cost(samples: list[dict], readings: list[dict]) -> dict | None:
    """CPU and statements per job over the steady phase less its first sample (warm-up):
    bench/cpu_meter.py's figures, the same on a loaded machine."""
    steady = [i for i, s in enumerate(samples) if s["phase"] == "steady"][1:]
    if not steady:
        return None
    jobs = sum(samples[i]["sent"] for i in steady)
    return CpuMeter.per_job(readings[steady[0]], readings[steady[-1] + 1], jobs)


def summary_line(sample: dict) -> str:
    job = sample["tables"]["asyncjobs_job"]
    rss = ", ".join(f"{r:.0f}" for r in sample["rss_mib"] if r is not None)
    p50, p95 = (
        "-" if sample[key] is None else f"{sample[key]:.1f}" for key in ("p50_ms", "p95_ms")
    )
    return (
        f"min {sample['minute']:>3} {sample['phase']:<8} "
        f"enq {sample['enqueued_rate']:>6.0f}/s  "
        f"p50 {p50} p95 {p95} ms  "
        f"ready {sample['ready']:>6} (oldest {sample['oldest_ready_s']:.1f}s)  "
        f"job {job['table_mib']:.1f}+{job['index_mib']:.1f} MiB  dead {job['dead']}  "
        f"autovac {job['autovacuums']}  claim {sample['claim_pages']} pages"
        f"  rss [{rss}] MiB  load {sample['load']:.1f}"
    )


def verdicts(samples: list[dict]) -> dict:
    """The goals, as figures and a yes/no each (reported, never asserted)."""
    steady = [s for s in samples if s["phase"] == "steady"]
    if len(steady) < WARM_UP_MINUTES + 2 * GOAL_WINDOW_MINUTES:
        window = max(1, (len(steady) - WARM_UP_MINUTES) // 2)
    else:
        window = GOAL_WINDOW_MINUTES
    measured = steady[WARM_UP_MINUTES:] or steady
    first, last = measured[:window], measured[-window:]

    def p95(part: list[dict]) -> float | None:
        values = [s["p95_ms"] for s in part if s["p95_ms"] is not None]
        return statistics.median(values) if values else None

    def size(sample: dict) -> float:
        return sum(t["table_mib"] + t["index_mib"] for t in sample["tables"].values())

    def rss(sample: dict) -> float:
        return sum(r for r in sample["rss_mib"] if r is not None)

    first_p95, last_p95 = p95(first), p95(last)
    base = steady[min(GOAL_WINDOW_MINUTES, len(steady)) - 1] if steady else None
    growth = (
        max(size(s) for s in steady[GOAL_WINDOW_MINUTES:]) / size(base) - 1
        if base is not None and len(steady) > GOAL_WINDOW_MINUTES and size(base)
        else None
    )
    rss_growth = rss(steady[-1]) / rss(measured[0]) - 1 if steady and rss(measured[0]) else None
    return {
        "p95_first_ms": first_p95,
        "p95_last_ms": last_p95,
        "p95_within_25pct": (
            None if first_p95 is None or last_p95 is None else last_p95 <= first_p95 * 1.25
        ),
        "size_growth_after_5_min": growth,
        "size_flat_within_20pct": None if growth is None else growth <= 0.20,
        "rss_growth": rss_growth,
        "rss_flat_within_20pct": None if rss_growth is None else rss_growth <= 0.20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30, help="steady phase (minutes)")
    parser.add_argument("--rate", type=float, default=1000, help="jobs enqueued per second")
    parser.add_argument("--surge-minutes", type=int, default=5)
    parser.add_argument("--surge-factor", type=float, default=2.0)
    parser.add_argument("--recovery-minutes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--clients", type=int, default=2, help="enqueuing threads")
    parser.add_argument("--fail-every", type=int, default=100, help="1 in N fails once")
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "soak.png")
    parser.add_argument(
        "--reloptions",
        default="asis",
        help='the tables\' autovacuum settings: "asis" (as migrated), "reset" (the'
        ' server\'s), or "name=value,..." to set (A/B runs)',
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 steady 10-second samples, 1 surge, 1 recovery, at 200 jobs/s: proves it runs",
    )
    parser.add_argument(
        "--retention-minutes", type=float, default=1, help="how long succeeded jobs are kept"
    )
    parser.add_argument(
        "--prefill", type=int, default=0, help="succeeded jobs in the table at the start"
    )
    parser.add_argument(
        "--worker-checkout",
        default=str(ROOT),
        help="run the workers from this checkout (an A/B of two commits' workers; its"
        " bench/settings.py must name the connections, as this one's does)",
    )
    parser.add_argument("--replot", type=Path, help="only draw the plot of a results file")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.plot)
        return
    if args.quick:
        args.minutes, args.surge_minutes, args.recovery_minutes = 3, 1, 1
        args.rate, args.sample_seconds = 200.0, 10.0
        if args.plot == ROOT / "docs" / "soak.png":
            args.plot = ROOT / "bench" / "results" / "soak-quick.png"
    result = run(args)
    stamp = result["when"].replace(":", "")
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    out = results_dir / ("soak-quick.json" if args.quick else f"soak-{stamp}.json")
    if not args.quick and out.exists():  # two runs (an A/B) ending in the same second
        out = out.with_name(f"soak-{stamp}-{os.getpid()}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    print(json.dumps(result["verdicts"], indent=2))
    if result["cost"]:
        print(f"steady phase after its first sample: {cost_line(result['cost'])}")
        print(json.dumps(result["cost"]["statements"], indent=2))
    plot(result, args.plot)


if __name__ == "__main__":
    main()
