"""Rate limits as the remote service counts them: how many task starts a queue under a
``RATE_LIMIT`` lets into any window of one period, and the rate it achieves.

    python bench/rate_limit.py [--calls 300] [--rate 10/s] [--workers 4] [--concurrency 4]
                               [--runs 1] [--busy] [--per-key 2]

Idle ``runworker`` processes first, then ``--calls`` jobs of ``bench.rate_tasks.stamp`` (on the
``limited`` queue) in one commit; each returns ``time.time()`` from its first line. With
``--busy`` the workers' slots are also kept busy all along by jobs of another queue (0.02
to 0.5 s each, prefetched), as in a worker that serves more than the limited queue.
With ``--per-key K`` the calls are ``bench.rate_tasks.stamp_per_key`` jobs under the task's
per-key ``limit_rate`` (the same ``--rate``), spread over K keys; each key is counted alone.
Reported per run: the most starts in any window of one period (``[t, t + period)``, every
``t``; with ``--per-key``, of the busiest key), which must never pass N, and the achieved rate,
(calls - 1) / (last start - first), of the busiest key.

The test suite checks the limit's arithmetic on a simulated clock (tests/test_limits.py,
``test_a_queue_rate_limit_holds_across_workers`` and its per-key twin); how close real starts
come to their slots on a loaded machine is measured here.

PostgreSQL by default (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/asyncjobs_bench,
dropped and created afresh); BENCH_SQLITE=1 for SQLite. Writes
bench/results/rate-<time>-<db>.json. Nothing here is asserted in tests.
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.common import stop_workers  # noqa: E402
from bench.run import reset, setup_django, start_workers  # noqa: E402

# The queue's RATE_LIMIT, set from --rate before Django's settings are read (by this process
# and by the workers it starts).
RATE = "10/s"

# The other queue's jobs under --busy, in seconds, taken in turn.
BUSY_DURATIONS = (0.02, 0.02, 0.02, 0.02, 0.5)


def most_in_one_window(starts: list[float], period: float) -> int:
    """The most starts in any window ``[t, t + period)``."""
    starts = sorted(starts)
    most = first = 0
    for last, at in enumerate(starts):
        while at - starts[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most


def run_once(
    calls: int, workers: int, concurrency: int, busy: bool, per_key: int = 0
) -> dict[str, object]:
    from asyncjobs import enqueue_many
    from asyncjobs.conf import parse_rate
    from asyncjobs.models import Job
    from bench.rate_tasks import pause, stamp, stamp_per_key

    interval = parse_rate(RATE)  # (parse_rate: in every version, for A/B runs)
    assert interval is not None
    count = int(RATE.split("/")[0])
    period = interval.total_seconds() * count
    reset()
    procs = start_workers(workers, concurrency)
    try:
        expected = calls * period / count / max(per_key, 1)  # each key has the full rate
        if busy:
            # Enough to keep every slot busy for the whole run, and then some.
            mean = sum(BUSY_DURATIONS) / len(BUSY_DURATIONS)
            others = int(workers * concurrency * (expected + 5) / mean)
            enqueue_many([(pause, (BUSY_DURATIONS[i % 5],), {}) for i in range(others)])
        if per_key:
            keyed = [stamp_per_key.using(concurrency_key=f"k{i % per_key}") for i in range(calls)]
            enqueue_many([(t, (), {}) for t in keyed])
            limited = Job.objects.exclude(limit_key="")
        else:
            enqueue_many([(stamp, (), {}) for _ in range(calls)])
            limited = Job.objects.filter(queue_name="limited")
        deadline = time.monotonic() + expected * 3 + 60
        while limited.filter(status__in=["queued", "running"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the limited queue did not drain in time")
            time.sleep(0.1)
    finally:
        stop_workers(procs)
    if limited.exclude(status="succeeded").exists():
        raise RuntimeError("some rate-limited jobs did not succeed")
    by_key: dict[str, list[float]] = {}
    for key, value in limited.values_list("limit_key", "return_value"):
        by_key.setdefault(key, []).append(float(value))
    # The busiest key (the only one without --per-key) is the one reported.
    starts = sorted(max(by_key.values(), key=lambda s: most_in_one_window(s, period)))
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span if span > 0 else float("inf")
    tightest = min(
        (starts[i + count] - starts[i] for i in range(len(starts) - count)), default=None
    )
    return {
        "keys": len(by_key),
        "most_in_one_period": most_in_one_window(starts, period),
        # The shortest time N + 1 consecutive starts took (under the period: a broken limit).
        "tightest_n_plus_1_s": tightest,
        "limit": count,
        "achieved_per_second": achieved,
        "nominal_per_second": count / period,
        "span_s": span,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", default="10/s", help="the queue's RATE_LIMIT")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--busy", action="store_true", help="keep the slots busy with another queue's jobs too"
    )
    parser.add_argument(
        "--per-key",
        type=int,
        default=0,
        metavar="K",
        help="a per-key limit_rate over K keys instead of the queue's RATE_LIMIT",
    )
    args = parser.parse_args()
    global RATE
    RATE = os.environ["BENCH_RATE_LIMIT"] = args.rate
    setup_django()
    from django.db import connection

    results = []
    for run in range(args.runs):
        result = run_once(args.calls, args.workers, args.concurrency, args.busy, args.per_key)
        results.append(result)
        keys = f" per key over {args.per_key} keys" if args.per_key else ""
        print(
            f"run {run + 1}/{args.runs}: {args.calls} calls at {RATE}{keys}"
            f"{' (busy slots)' if args.busy else ''}, {args.workers} x {args.concurrency}: "
            f"most in one period {result['most_in_one_period']} (limit {result['limit']}), "
            f"N + 1 starts took at least {result['tightest_n_plus_1_s'] or 0:.3f} s, "
            f"achieved {result['achieved_per_second']:.2f}/s of "
            f"{result['nominal_per_second']:.2f}/s",
            flush=True,
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S%z")
    out = ROOT / "bench" / "results" / f"rate-{stamp}-{connection.vendor}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(r["most_in_one_period"] <= r["limit"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
