"""asyncjobs against its peers on this machine: django-tasks-db, procrastinate, Celery + Redis.

    python bench/compare.py [--database postgresql|mariadb|pgbouncer] [--runs 3] [--jobs 10000]
                            [--samples 50] [--depth 100000] [--quick] [--poll-interval S]
                            [--systems asyncjobs psycopg ...] [--only enqueue,bulk]
                            [--asyncjobs-checkout PATH]

Next to the peers, a baseline: asyncjobs' row for a no-op job stored into the same table by
the bare driver, and worked off by a hand-written ``FOR UPDATE SKIP LOCKED`` loop
(bench/peers/baseline.py), which tells what the database and the driver cost on the machine
at hand, so that figures from machines of different speed can be read as a share of it.

``--database`` picks the set-up (each its own systems, see SETUPS):

- postgresql (default): the local PostgreSQL; asyncjobs, the psycopg baseline,
  django-tasks-db, procrastinate, Celery + Redis.
- mariadb: MariaDB/MySQL at BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306); asyncjobs,
  the mysqlclient baseline, django-tasks-db. Every system polls, every ``--poll-interval``
  seconds (default 0.2, asyncjobs' own default there).
- pgbouncer: the local PostgreSQL through a PgBouncer in transaction mode that this script
  starts (scripts/pgbouncer.sh, ``--pool-size`` server connections, fewer than the workers
  hold); asyncjobs polling (every ``--poll-interval`` seconds, default 0.2), asyncjobs with
  its workers' LISTEN on a direct connection (``asyncjobs-listen``), the psycopg baseline
  (polling) through the same PgBouncer.

The PostgreSQL server is BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432);
BENCH_DB_SUFFIX is appended to every database's name (two sessions on one server).

``--asyncjobs-checkout PATH`` adds ``asyncjobs-checkout``: the asyncjobs package of another
checkout (an older commit, say), run by this harness and interpreter in the same interleaved
turns, for an A/B of two commits on one machine (see bench/HISTORY.md).

Installs the peers into their own virtualenv (bench/.peers, from bench/peers/requirements.txt)
on first use, then runs bench/peers/run_peer.py for each system in turn, interleaved
(A B C D, A B C D, ...), so that a slow minute of the machine hits every system alike.
Celery is skipped (and said so) when no Redis answers at PEER_REDIS_URL. Writes
bench/results/compare-<time>.json, prints medians (min-max) and asyncjobs' ratio to each
peer, and draws bench/results/compare-drain.png, compare-depth.png and compare-latency.png.
Nothing here is asserted anywhere: the figures are for reading.
"""

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_results  # noqa: E402

PEERS_VENV = ROOT / "bench" / ".peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
REQUIREMENTS = ROOT / "bench" / "peers" / "requirements.txt"
RESULTS = ROOT / "bench" / "results"
PEERS = ["django-tasks-db", "procrastinate", "celery"]
# Run with this interpreter (the project's .venv), the others with the peers' virtualenv.
OURS = [
    "asyncjobs",
    "asyncjobs-checkout",
    "asyncjobs-listen",
    "asyncjobs-pool",
    "psycopg",
    "mysqlclient",
]
# The systems of each set-up (--database), in the order they take turns.
SETUPS = {
    "postgresql": ["asyncjobs", "psycopg", *PEERS],
    "mariadb": ["asyncjobs", "mysqlclient", "django-tasks-db"],
    "pgbouncer": ["asyncjobs", "asyncjobs-listen", "psycopg"],
}
RATES = ["enqueue", "bulk", "drain_1", "drain_2", "drain_depth"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_peers() -> None:
    stamp = PEERS_VENV / ".requirements"
    wanted = REQUIREMENTS.read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log(f"==> installing the peers into {PEERS_VENV.relative_to(ROOT)}")
    venv.create(PEERS_VENV, with_pip=True, clear=True)
    subprocess.run(
        [str(PEERS_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)


def redis_available() -> bool:
    probe = (
        "import os, redis; redis.Redis.from_url(os.environ.get('PEER_REDIS_URL', "
        "'redis://127.0.0.1:6379/15'), socket_timeout=2).ping()"
    )
    return subprocess.run([str(PEERS_PYTHON), "-c", probe], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server_env(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The environment that points bench/peers/run_peer.py at the set-up's server: for
    pgbouncer, a PgBouncer in transaction mode started here and stopped on the way out."""
    pg = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
    env = {"BENCH_DB_SUFFIX": os.environ.get("BENCH_DB_SUFFIX", "")}
    if args.poll_interval is not None:
        env["BENCH_POLL_INTERVAL"] = str(args.poll_interval)
    if args.database == "postgresql":
        yield {**env, "BENCH_SERVER_URL": pg}
        return
    if args.database == "mariadb":
        mysql = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306").rstrip("/")
        yield {**env, "BENCH_SERVER_URL": mysql}
        return
    parts = urlsplit(pg)
    with tempfile.TemporaryDirectory(prefix="bench-pgbouncer-") as directory:
        port = free_port()
        script = ROOT / "scripts" / "pgbouncer.sh"
        subprocess.run(
            ["bash", str(script), "start", directory, str(port), str(args.pool_size)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log(f"==> PgBouncer (transaction mode, pool of {args.pool_size}) on port {port}")
        try:
            yield {
                **env,
                "BENCH_SERVER_URL": urlunsplit(
                    parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{port}")
                ),
                "BENCH_DIRECT_SERVER_URL": pg,
                "BENCH_DIRECT_PORT": str(parts.port or 5432),
            }
        finally:
            subprocess.run(["bash", str(script), "stop", directory], check=False)


@contextlib.contextmanager
def checkout_overlay(path: str | None) -> Iterator[dict[str, str]]:
    """For ``--asyncjobs-checkout``: a directory holding only that checkout's asyncjobs (a
    link), which bench/peers/run_peer.py puts ahead of this one's."""
    if path is None:
        yield {}
        return
    package = Path(path).resolve() / "asyncjobs"
    if not (package / "__init__.py").exists():
        raise SystemExit(f"no asyncjobs package in {path}")
    with tempfile.TemporaryDirectory(prefix="bench-checkout-") as directory:
        (Path(directory) / "asyncjobs").symlink_to(package)
        yield {"BENCH_ASYNCJOBS_OVERLAY": directory}


def run_peer(system: str, arguments: list[str], server: dict[str, str]) -> dict[str, Any]:
    """Run bench/peers/run_peer.py for ``system`` with ``arguments``, in the interpreter that
    has it (the project's or the peers' virtualenv); its JSON line, parsed."""
    python = sys.executable if system in OURS else str(PEERS_PYTHON)
    command = [python, str(ROOT / "bench" / "peers" / "run_peer.py"), system, *arguments]
    env = {**os.environ, **server, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if system != "asyncjobs-checkout":
        env.pop("BENCH_ASYNCJOBS_OVERLAY", None)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_system(system: str, args: argparse.Namespace, server: dict[str, str]) -> dict[str, Any]:
    arguments = [
        "--jobs",
        str(args.jobs),
        "--enqueue-jobs",
        str(args.enqueue_jobs or args.jobs),
        "--drain-jobs",
        str(args.drain_jobs or args.jobs),
        "--samples",
        str(args.samples),
        "--concurrency",
        str(args.concurrency),
        "--depth",
        str(args.depth),
        *(("--only", args.only) if args.only else ()),
    ]
    return run_peer(system, arguments, server)


def checkout_commit(path: str | None) -> str | None:
    """The commit ``--asyncjobs-checkout`` names (its path if not a git checkout)."""
    if path is None:
        return None
    done = subprocess.run(
        ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else path


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=sorted(SETUPS), default="postgresql")
    parser.add_argument(
        "--poll-interval",
        type=float,
        help="seconds between an idle worker's looks, for the systems that poll "
        "(default: 0.2 on mariadb and pgbouncer; each system's own on postgresql)",
    )
    parser.add_argument(
        "--pool-size", type=int, default=4, help="PgBouncer's server connections (pgbouncer)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per bulk enqueue")
    parser.add_argument("--enqueue-jobs", type=int, help="single enqueues (default: --jobs)")
    parser.add_argument("--drain-jobs", type=int, help="jobs per drain (default: --jobs)")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument(
        "--depth", type=int, default=100_000, help="future jobs for the depth drain (0: skip)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 run, 200 jobs, 5 samples, no drain with 1 worker process, depth 2,000 "
        "(postgresql only): proves the harness runs",
    )
    parser.add_argument("--systems", nargs="*", help="default: the set-up's (see SETUPS)")
    parser.add_argument("--only", help="workloads, comma-separated (see bench/peers/run_peer.py)")
    parser.add_argument(
        "--asyncjobs-checkout",
        metavar="PATH",
        help="also run the asyncjobs package of the checkout at PATH (asyncjobs-checkout)",
    )
    args = parser.parse_args()
    if args.quick:
        # What proves the harness (CI runs it on each set-up), not figures: every system
        # through each code path once, small. drain_1 runs the same code as drain_2 with one
        # worker start-up less; the depth drain fills the table with PostgreSQL's SQL.
        args.runs, args.jobs, args.samples = 1, 200, 5
        args.enqueue_jobs = args.drain_jobs = None
        if not args.only:
            args.only = "enqueue,bulk,drain_2,latency"
            if args.database == "postgresql":
                args.only += ",drain_depth"
        args.depth = min(args.depth, 2_000)
    if args.database != "postgresql":
        # The depth drain fills the table with PostgreSQL's SQL; the other set-ups measure
        # enqueue, drain and latency only.
        args.depth = 0
        if args.poll_interval is None:
            args.poll_interval = 0.2
    systems = list(args.systems or SETUPS[args.database])
    if unknown := set(systems) - set(SETUPS[args.database]):
        parser.error(f"not in the {args.database} set-up: {', '.join(sorted(unknown))}")
    if args.asyncjobs_checkout:
        systems.insert(
            systems.index("asyncjobs") + 1 if "asyncjobs" in systems else 0, "asyncjobs-checkout"
        )
    if any(system not in OURS for system in systems):
        ensure_peers()
    notes = []
    if "celery" in systems and not redis_available():
        systems.remove("celery")
        notes.append("celery skipped: no Redis at PEER_REDIS_URL")
        log("==> " + notes[-1])

    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    with server_env(args) as server, checkout_overlay(args.asyncjobs_checkout) as overlay:
        server = {**server, **overlay}
        for run in range(args.runs):
            for system in systems:
                log(f"==> {args.database} run {run + 1}/{args.runs}: {system}")
                raw[system].append(run_system(system, args, server))

    summary: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    for system, runs in raw.items():
        # A rate a run could not time is left out (run_peer.py notes why), never read as 0.
        notes += [note for r in runs for note in r.get("notes", ())]
        timed = {key: [r[key] for r in runs if r.get(key) is not None] for key in RATES}
        summary[system] = {key: spread(timed[key]) if timed[key] else None for key in RATES}
        depth, empty = summary[system]["drain_depth"], summary[system]["drain_2"]
        summary[system]["depth_over_empty"] = (
            depth["median"] / empty["median"] if depth and empty else None
        )
        summary[system]["latency_p50"] = summary[system]["latency_p95"] = None
        if "latency_ms" in runs[0]:
            latencies[system] = [v for r in runs for v in r["latency_ms"]["all"]]
            ordered = sorted(latencies[system])
            summary[system]["latency_p50"] = statistics.median(ordered)
            summary[system]["latency_p95"] = ordered[round(0.95 * (len(ordered) - 1))]
        summary[system]["concurrency"] = runs[0]["concurrency"]
    # Each asyncjobs variant over every other system: rates as ours / theirs, latencies as
    # theirs / ours, so that above 1 is asyncjobs ahead either way.
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in systems:
        if not name.startswith("asyncjobs"):
            continue
        ours = summary[name]
        ratios[name] = {}
        for system in systems:
            if system.startswith("asyncjobs"):
                continue
            theirs = summary[system]
            ratios[name][system] = {
                key: (ours[key]["median"] / theirs[key]["median"])
                if ours[key] and theirs[key] and theirs[key]["median"]
                else None
                for key in RATES
            }
            for key in ("latency_p50", "latency_p95"):
                ratios[name][system][key] = (
                    theirs[key] / ours[key] if theirs[key] and ours[key] else None
                )

    when = datetime.now(UTC).isoformat(timespec="seconds")
    report = {
        "when": when,
        "jobs": args.jobs,
        "enqueue_jobs": args.enqueue_jobs or args.jobs,
        "drain_jobs": args.drain_jobs or args.jobs,
        "runs": args.runs,
        "samples": args.samples,
        "concurrency": args.concurrency,
        "depth": args.depth,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "database": args.database,
        "server_version": next(
            (r[0].get("server_version") for r in raw.values() if r[0].get("server_version")),
            None,
        ),
        "poll_interval_s": args.poll_interval,
        "pool_size": args.pool_size if args.database == "pgbouncer" else None,
        "systems": systems,
        "asyncjobs_checkout": checkout_commit(args.asyncjobs_checkout),
        "notes": notes,
        "summary": summary,
        "ratios_asyncjobs_over_peer": ratios.get("asyncjobs", {}),
        "ratios": ratios,
        "latencies": latencies,
        "raw": raw,
    }
    prefix = "quick-compare-" if args.quick else "compare-"
    if args.database != "postgresql":
        prefix += f"{args.database}-"
    path = write_results(RESULTS, prefix, report)
    # The plots show the PostgreSQL set-up; a partial run keeps those of the last full one.
    # (Drawn in the peers' virtualenv, which a run of asyncjobs' systems alone does not make.)
    if not args.quick and not args.only and args.database == "postgresql" and PEERS_PYTHON.exists():
        subprocess.run(
            [str(PEERS_PYTHON), str(ROOT / "bench" / "peers" / "plot.py"), str(path), str(RESULTS)],
            check=True,
        )

    def cell(s: dict[str, float] | None) -> str:
        if s is None:
            return "n/a"
        return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"

    print(
        f"\n{args.database}: no-op jobs, {args.enqueue_jobs or args.jobs:,} single enqueues, "
        f"bulk of {args.jobs:,}, drains of {args.drain_jobs or args.jobs:,}, "
        f"{args.runs} interleaved runs, "
        "medians (min-max)"
        + (f", idle workers poll every {args.poll_interval} s" if args.poll_interval else "")
    )
    header = f"{'system':17} {'enqueue/s':>20} {'bulk/s':>22} {'drain 1 proc/s':>20}"
    header += f" {'drain 2 procs/s':>20} {'same, deep':>20} {'latency p50/p95 ms':>20}"
    print(header)
    for system in systems:
        s = summary[system]
        print(
            f"{system:17} {cell(s['enqueue']):>20} {cell(s['bulk']):>22} "
            f"{cell(s['drain_1']):>20} {cell(s['drain_2']):>20} {cell(s['drain_depth']):>20} "
            + (
                f"{s['latency_p50']:>10.1f} / {s['latency_p95']:.1f}"
                if s["latency_p50"] is not None
                else f"{'n/a':>20}"
            )
        )
    if any(summary[system]["drain_depth"] for system in systems):
        print(f"deep: {args.depth:,} jobs due tomorrow in the table, unanalyzed")
    for system in systems:
        if (share := summary[system]["depth_over_empty"]) is not None:
            print(f"{system}: drain with depth at {share:.0%} of the empty-table drain")
    for name, theirs in ratios.items():
        for system, r in theirs.items():
            parts = [f"{k} {v:.2f}x" for k, v in r.items() if v is not None]
            print(f"{name} vs {system}: " + ", ".join(parts))
    for note in notes:
        print(f"note: {note}")
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
