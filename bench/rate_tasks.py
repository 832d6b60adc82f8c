"""Tasks of the rate-limit benchmark (bench/rate_limit.py), in a module of their own: their
"limited" queue exists only in that benchmark's settings (BENCH_RATE_LIMIT), and a task is
checked against its backend's queues when it is defined."""

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
