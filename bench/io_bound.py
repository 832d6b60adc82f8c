"""I/O-bound jobs at high concurrency: asyncjobs against Celery and procrastinate.

    python bench/io_bound.py [--runs 3] [--jobs 5000] [--concurrency 500] [--quick]
                             [--kinds sleep,asyncio,orm,orm_async,http] [--systems ...]
                             [--worker-args "--max-connections 10"]

``--jobs`` jobs that each wait 0.2 s (``time.sleep``, ``asyncio.sleep``, an ORM query then
``time.sleep``, the async ORM then ``asyncio.sleep``, an httpx call to a local server that
answers after 0.2 s), worked off by one worker process at ``--concurrency``; the bound is
concurrency / 0.2 s jobs/s. For each: jobs/s, the peak of the worker's connections to its
database, and the jobs that failed (bench/peers/io_workloads.py says how each is measured).

The systems (interleaved, A B C D, A B C D, ..., as bench/compare.py, whose machinery this
uses: the peers' virtualenv bench/.peers, bench/peers/run_peer.py): asyncjobs (its default
``MAX_DB_CONNECTIONS``), asyncjobs-pool (the same with Django's psycopg pool,
``OPTIONS["pool"]``), Celery with its thread pool and Redis (skipped without Redis at
PEER_REDIS_URL), procrastinate (its worker's ``--concurrency``). Each system's database
gets a connection limit of BENCH_IO_CONNECTION_LIMIT (default 50), the stand-in for a
server's ``max_connections`` shared with the web app, which PostgreSQL does not enforce
against superusers (then the server's own limit applies). PostgreSQL only (BENCH_PG_URL, default the
local server; BENCH_DB_SUFFIX as for bench/compare.py).

Writes bench/results/io-<time>.json and prints medians (min-max) with asyncjobs' ratio to
each peer. Nothing here is asserted anywhere.
"""

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_results  # noqa: E402
from bench.compare import (  # noqa: E402
    OURS,
    RESULTS,
    ensure_peers,
    free_port,
    log,
    redis_available,
    run_peer,
)

SYSTEMS = ["asyncjobs", "asyncjobs-pool", "celery", "procrastinate"]
KINDS = ["sleep", "asyncio", "orm", "orm_async", "http"]
WAIT = 0.2


@contextlib.contextmanager
def slow_server() -> Iterator[str]:
    """bench/peers/slow_http.py on a free port, answering after WAIT; its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "peers" / "slow_http.py"), str(port), str(WAIT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the slow HTTP server did not start")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--systems", nargs="*", default=SYSTEMS)
    parser.add_argument("--worker-args", default="", help="more runworker options for asyncjobs")
    parser.add_argument(
        "--quick", action="store_true", help="1 run, 200 jobs, concurrency 50 (proves it runs)"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.concurrency = 1, 200, 50
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    systems = list(args.systems)
    if unknown := set(systems) - set(SYSTEMS):
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if any(system not in OURS for system in systems):
        ensure_peers()
    notes = []
    if "celery" in systems and not redis_available():
        systems.remove("celery")
        notes.append("celery skipped: no Redis at PEER_REDIS_URL")
        log("==> " + notes[-1])

    pg = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
    arguments = ["--io", ",".join(kinds), "--jobs", str(args.jobs)]
    arguments += ["--concurrency", str(args.concurrency)]
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    with slow_server() as url:
        server = {
            "BENCH_SERVER_URL": pg,
            "BENCH_DB_SUFFIX": os.environ.get("BENCH_DB_SUFFIX", ""),
            "BENCH_IO_URL": url,
            "BENCH_IO_WAIT": str(WAIT),
            "BENCH_WORKER_ARGS": args.worker_args,
        }
        for run in range(args.runs):
            for system in systems:
                log(f"==> I/O run {run + 1}/{args.runs}: {system}")
                raw[system].append(run_peer(system, arguments, server)["io"])

    summary: dict[str, dict[str, Any]] = {}
    for system, runs in raw.items():
        summary[system] = {}
        for kind in kinds:
            figures = [r[kind] for r in runs if r.get(kind)]
            if not figures:
                summary[system][kind] = None
                continue
            rates = [f["jobs_per_s"] or 0.0 for f in figures]
            summary[system][kind] = {
                "jobs_per_s": {
                    "median": statistics.median(rates),
                    "min": min(rates),
                    "max": max(rates),
                },
                "peak_connections": max(f["peak_connections"] for f in figures),
                "failed": sum(f["failed"] for f in figures),
                "unfinished_runs": sum(not f["finished"] for f in figures),
            }
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for ours in (s for s in systems if s.startswith("asyncjobs")):
        ratios[ours] = {}
        for theirs in (s for s in systems if not s.startswith("asyncjobs")):
            ratios[ours][theirs] = {
                kind: summary[ours][kind]["jobs_per_s"]["median"]
                / summary[theirs][kind]["jobs_per_s"]["median"]
                if summary[ours][kind]
                and summary[theirs][kind]
                and summary[theirs][kind]["jobs_per_s"]["median"]
                else None
                for kind in kinds
            }

    when = datetime.now(UTC).isoformat(timespec="seconds")
    report = {
        "when": when,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "wait_s": WAIT,
        "bound_jobs_per_s": args.concurrency / WAIT,
        "runs": args.runs,
        "worker_args": args.worker_args,
        "connection_limit": int(os.environ.get("BENCH_IO_CONNECTION_LIMIT", "50")),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "systems": systems,
        "kinds": kinds,
        "notes": notes,
        "summary": summary,
        "ratios": ratios,
        "raw": raw,
    }
    prefix = "quick-io-" if args.quick else "io-"
    path = write_results(RESULTS, prefix, report)

    print(
        f"\n{args.jobs:,} jobs of {WAIT * 1000:.0f} ms, 1 worker process at concurrency "
        f"{args.concurrency} (bound {args.concurrency / WAIT:,.0f} jobs/s), {args.runs} "
        "interleaved runs: jobs/s median (min-max), peak connections, failed jobs"
    )
    print(f"{'system':15}" + "".join(f"{kind:>30}" for kind in kinds))
    for system in systems:
        cells = []
        for kind in kinds:
            s = summary[system][kind]
            if s is None:
                cells.append(f"{'n/a':>30}")
                continue
            r = s["jobs_per_s"]
            text = f"{r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) {s['peak_connections']}c"
            if s["failed"]:
                text += f" {s['failed']}F"
            if s["unfinished_runs"]:
                text += "*"
            cells.append(f"{text:>30}")
        print(f"{system:15}" + "".join(cells))
    print("c: peak connections; F: failed jobs; *: a run did not finish in time")
    for ours, theirs in ratios.items():
        for system, r in theirs.items():
            parts = [f"{k} {v:.2f}x" for k, v in r.items() if v is not None]
            print(f"{ours} vs {system}: " + ", ".join(parts))
    for note in notes:
        print(f"note: {note}")
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
