"""Cancelling the rest of a big batch (``services.cancel_batch_jobs``, what the cancel job runs):
how long it takes, how long each chunk's transaction holds its locks, and how long plain
enqueues on another connection take meanwhile, against the same enqueues with no cancel
running (A/B in one run: quiet, cancel, quiet, cancel, ...).

    python bench/batch_cancel.py [--jobs 100000] [--runs 2] [--chunk 500]

PostgreSQL by default (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/asyncjobs_bench,
recreated); BENCH_SQLITE=1 for SQLite. Prints medians and maxima; no timing is asserted
anywhere.
"""

import argparse
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.batches import reset  # noqa: E402
from bench.run import setup_django  # noqa: E402


def enqueue_latencies(stop: threading.Event, out: list[float]) -> None:
    """Enqueue plain jobs one by one (each its own transaction) until ``stop``; the
    duration of each, in ms."""
    from django.db import connections

    from bench.tasks import noop

    try:
        while not stop.is_set():
            start = time.perf_counter()
            noop.enqueue()
            out.append((time.perf_counter() - start) * 1000)
    finally:
        connections.close_all()


def one_run(jobs: int, chunk: int, cancel: bool) -> dict[str, float]:
    """A batch of ``jobs`` scheduled jobs; with ``cancel``, cancel them all while another
    thread enqueues; without, the same enqueues for as long as the last cancel took."""
    from django.utils import timezone

    from asyncjobs import batch, services
    from bench.tasks import noop

    reset()
    later = noop.using(run_after=timezone.now() + timedelta(hours=1))
    with batch(description="bench cancel") as b:
        b.enqueue_many([(later, [], {}) for _ in range(jobs)])
    latencies: list[float] = []
    chunks: list[float] = []
    stop = threading.Event()
    enqueuer = threading.Thread(target=enqueue_latencies, args=(stop, latencies))
    enqueuer.start()
    start = time.perf_counter()
    if cancel:
        marks = [time.perf_counter()]

        def between() -> None:
            now = time.perf_counter()
            chunks.append((now - marks[-1]) * 1000)
            marks.append(now)

        done, _ = services.cancel_batch_jobs(b.id, now=None, chunk=chunk, between=between)
        assert done.cancelled == jobs, done
        chunks.append((time.perf_counter() - marks[-1]) * 1000)
        chunks = chunks[1:]  # the first mark is before the first chunk's read
    else:
        time.sleep(one_run.last_cancel)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    stop.set()
    enqueuer.join()
    if cancel:
        one_run.last_cancel = elapsed  # type: ignore[attr-defined]
        assert b.refresh().cancelled == jobs
    result = {
        "seconds": elapsed,
        "enqueues": len(latencies),
        "enqueue_ms_median": statistics.median(latencies) if latencies else 0.0,
        "enqueue_ms_max": max(latencies, default=0.0),
    }
    if cancel:
        result["jobs_per_s"] = jobs / elapsed
        result["chunk_ms_median"] = statistics.median(chunks)
        result["chunk_ms_max"] = max(chunks)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500)
    args = parser.parse_args()
    setup_django()
    one_run.last_cancel = 5.0  # type: ignore[attr-defined]
    rows: dict[str, list[dict[str, float]]] = {"cancel": [], "quiet": []}
    for _ in range(args.runs):
        rows["cancel"].append(one_run(args.jobs, args.chunk, cancel=True))
        rows["quiet"].append(one_run(args.jobs, args.chunk, cancel=False))
    for kind, runs in rows.items():
        keys = sorted({key for run in runs for key in run})
        summary = ", ".join(
            f"{key} {statistics.median(run[key] for run in runs):.1f}"
            f" (max {max(run[key] for run in runs):.1f})"
            for key in keys
        )
        print(f"{kind}: {summary}")


if __name__ == "__main__":
    main()
