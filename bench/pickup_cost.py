"""What a worker does between a job's announcement and its task's first line, counted in this
process so that the figures do not depend on the machine's load: per job, the worker's CPU on
that path (``time.thread_time()``), and under valgrind the instructions it ran.

    python bench/pickup_cost.py [--jobs 300] [--runs 3] [--no-pickup]

Each job is enqueued (``noop.enqueue()``, timed on its own), then picked up as the listener
thread does it on a notification: one round of a real ``Runner`` (``Runner._round``: the
watchdog's checks, the claim, the hand-over to the slots' work queue), then the execution is
taken from that queue and run (``Executor.run``) up to the task, whose success goes to a
completer that is not started (its database write is the completer thread's, after the
task: not on the path). Prints the median CPU per job of the enqueue and of the pickup.

Instructions (the same in any load): run it under callgrind twice, with and without the
pickup, and divide the difference of the totals by the jobs::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/pickup_cost.py \\
        --jobs 200 --runs 1 [--no-pickup]      # "Collected : N" is the instruction count

Round trips to the database on the path: ``strace -f -tt -e trace=sendto,recvfrom,futex,openat``
on a worker running latency jobs (each statement is one ``sendto``; bench/README.md).

The database of DATABASE_URL (PostgreSQL), migrated, its jobs and attempts deleted first.
For an A/B of two commits, run it in turn with BENCH_ASYNCJOBS_OVERLAY set to a directory
holding only a symlink ``asyncjobs`` to the other checkout's package, and without. Nothing is
asserted anywhere.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# As bench/compare.py's --asyncjobs-checkout: a directory holding only another checkout's
# asyncjobs package (a symlink), put first, for an A/B of two commits with this script.
if overlay := os.environ.get("BENCH_ASYNCJOBS_OVERLAY"):
    sys.path.insert(0, overlay)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pickup", action="store_true", help="enqueue only (a baseline)")
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command

    from asyncjobs.models import Attempt, Job
    from asyncjobs.worker.completer import Completer
    from asyncjobs.worker.runner import Runner
    from bench.tasks import noop

    call_command("migrate", verbosity=0)
    runner = Runner(concurrency=1)
    runner.executor.completer = Completer(runner.executor, runner.slots.finish)  # not started
    enqueue_cpu: list[float] = []
    pickup_cpu: list[float] = []
    for _ in range(args.runs):
        Attempt.objects.all().delete()
        Job.objects.all().delete()
        enq = pick = 0.0
        for _ in range(args.jobs):
            began = time.thread_time()
            noop.enqueue()
            enq += time.thread_time() - began
            if args.no_pickup:
                continue
            began = time.thread_time()
            runner._round()
            execution = runner.slots._work.get_nowait()[2]
            with runner.slots.lock:  # what a slot thread does before it runs a job
                runner.slots._begin(execution)
                runner.slots.buffered -= 1
            runner.executor.run(execution)
            pick += time.thread_time() - began
            runner.slots.finish(execution, None)
        enqueue_cpu.append(enq / args.jobs * 1e6)
        pickup_cpu.append(pick / args.jobs * 1e6)
    print(
        f"{args.runs} runs of {args.jobs} jobs, medians: enqueue CPU "
        f"{statistics.median(enqueue_cpu):,.0f} µs per job; pickup CPU (claim round, hand-over, "
        f"executor up to the task) {statistics.median(pickup_cpu):,.0f} µs per job"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
