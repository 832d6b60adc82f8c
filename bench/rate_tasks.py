"""Tasks of the rate-limit benchmark (bench/rate_limit.py), in a module of their own: their
"limited" and "keyed" queues exist only in that benchmark's settings (BENCH_RATE_LIMIT), and a
task is checked against its backend's queues when it is defined."""

import os
import time

from asyncjobs.tasks_api import task


@task(queue_name="limited")
def stamp() -> float:
    """The rate-limit benchmark's call: returns the time its first line saw, as a remote
    service would count the call."""
    started = time.time()
    return started


@task()
def pause(seconds: float) -> None:
    """Keeps a worker slot busy (the rate-limit benchmark's other queue)."""
    time.sleep(seconds)


@task(
    queue_name="keyed",
    rate_limit=os.environ.get("BENCH_RATE_LIMIT") or "10/s",
    concurrency_limit=1000,
)
def stamp_per_key() -> float:
    """The call of ``--per-key`` runs: as ``stamp``, under a rate limit per key (the
    benchmark's ``--rate``), enqueued with ``.using(concurrency_key=...)``; on a queue of its
    own, so that ``--busy`` jobs do not hold it up."""
    started = time.time()
    return started
