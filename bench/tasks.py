"""Tasks the benchmarks run."""

from asyncjobs.tasks_api import task
from bench.latency import record


@task()
def noop(enqueued_at=None):
    record(enqueued_at)
