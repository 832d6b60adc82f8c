"""Tasks the benchmarks run."""

import time

from asyncjobs.tasks_api import task
from bench.latency import record


@task()
def noop(enqueued_at=None):
    record(enqueued_at)


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
