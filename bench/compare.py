"""asyncjobs against its peers on this machine: django-tasks-db, procrastinate, Celery + Redis.

    python bench/compare.py [--runs 3] [--jobs 10000] [--samples 50] [--depth 100000] [--quick]
                            [--systems asyncjobs psycopg ...] [--only enqueue,bulk]

Next to the peers, a baseline (``psycopg``): asyncjobs' row for a no-op job stored into the
same table by psycopg directly, which tells what the database and the driver cost on the
machine at hand, so that figures from machines of different speed can be read as a share of
it. It only stores jobs (enqueue, bulk).

Installs the peers into their own virtualenv (bench/.peers, from bench/peers/requirements.txt)
on first use, then runs bench/peers/run_peer.py for each system in turn, interleaved
(A B C D, A B C D, ...), so that a slow minute of the machine hits every system alike.
Celery is skipped (and said so) when no Redis answers at PEER_REDIS_URL. Writes
bench/results/compare-<time>.json, prints medians (min-max) and asyncjobs' ratio to each
peer, and draws bench/results/compare-drain.png, compare-depth.png and compare-latency.png.
Nothing here is asserted anywhere: the figures are for reading.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import venv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_VENV = ROOT / "bench" / ".peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
REQUIREMENTS = ROOT / "bench" / "peers" / "requirements.txt"
RESULTS = ROOT / "bench" / "results"
PEERS = ["django-tasks-db", "procrastinate", "celery"]
BASELINES = ["psycopg"]  # run with this interpreter, like asyncjobs
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


def run_system(system: str, args: argparse.Namespace) -> dict[str, Any]:
    python = sys.executable if system in ("asyncjobs", *BASELINES) else str(PEERS_PYTHON)
    command = [
        python,
        str(ROOT / "bench" / "peers" / "run_peer.py"),
        system,
        "--jobs",
        str(args.jobs),
        "--samples",
        str(args.samples),
        "--concurrency",
        str(args.concurrency),
        "--depth",
        str(args.depth),
        *(("--only", args.only) if args.only else ()),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument(
        "--depth", type=int, default=100_000, help="future jobs for the depth drain (0: skip)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run, 500 jobs, 10 samples, depth 2,000"
    )
    parser.add_argument("--systems", nargs="*", default=["asyncjobs", *BASELINES, *PEERS])
    parser.add_argument("--only", help="workloads, comma-separated (see bench/peers/run_peer.py)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.samples = 1, 500, 10
        args.depth = min(args.depth, 2_000)
    ensure_peers()
    systems = list(args.systems)
    notes = []
    if "celery" in systems and not redis_available():
        systems.remove("celery")
        notes.append("celery skipped: no Redis at PEER_REDIS_URL")
        log("==> " + notes[-1])

    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for run in range(args.runs):
        for system in systems:
            log(f"==> run {run + 1}/{args.runs}: {system}")
            raw[system].append(run_system(system, args))

    summary: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    for system, runs in raw.items():
        summary[system] = {
            key: spread([r[key] for r in runs]) if runs[0].get(key) is not None else None
            for key in RATES
        }
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
    ratios: dict[str, dict[str, float | None]] = {}
    ours = summary.get("asyncjobs")
    if ours:
        for system in systems:
            if system == "asyncjobs":
                continue
            theirs = summary[system]
            ratios[system] = {
                key: (ours[key]["median"] / theirs[key]["median"])
                if ours[key] and theirs[key]
                else None
                for key in RATES
            }
            ratios[system]["latency_p50"] = (
                theirs["latency_p50"] / ours["latency_p50"]
                if theirs["latency_p50"] and ours["latency_p50"]
                else None
            )

    when = datetime.now(UTC).isoformat(timespec="seconds")
    report = {
        "when": when,
        "jobs": args.jobs,
        "runs": args.runs,
        "samples": args.samples,
        "concurrency": args.concurrency,
        "depth": args.depth,
        "machine": {"cpus": os.cpu_count()},
        "systems": systems,
        "notes": notes,
        "summary": summary,
        "ratios_asyncjobs_over_peer": ratios,
        "latencies": latencies,
        "raw": raw,
    }
    RESULTS.mkdir(exist_ok=True)
    prefix = "quick-compare-" if args.quick else "compare-"
    path = RESULTS / f"{prefix}{when.replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    if not args.quick and not args.only:  # (a partial run keeps the plots of the last full one)
        subprocess.run(
            [str(PEERS_PYTHON), str(ROOT / "bench" / "peers" / "plot.py"), str(path), str(RESULTS)],
            check=True,
        )

    def cell(s: dict[str, float] | None) -> str:
        if s is None:
            return "n/a"
        return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"

    print(f"\n{args.jobs:,} no-op jobs, {args.runs} interleaved runs, medians (min-max)")
    header = f"{'system':16} {'enqueue/s':>20} {'bulk/s':>22} {'drain 1 proc/s':>20}"
    header += f" {'drain 2 procs/s':>20} {'same, deep':>20} {'latency p50/p95 ms':>20}"
    print(header)
    for system in systems:
        s = summary[system]
        print(
            f"{system:16} {cell(s['enqueue']):>20} {cell(s['bulk']):>22} "
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
    for system, r in ratios.items():
        parts = [f"{k} {v:.1f}x" for k, v in r.items() if v is not None]
        print(f"asyncjobs vs {system}: " + ", ".join(parts))
    for note in notes:
        print(f"note: {note}")
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
