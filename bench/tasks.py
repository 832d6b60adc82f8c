"""Tasks the benchmarks run."""

from asyncjobs.tasks_api import task
from bench.latency import record


@task()
def noop(enqueued_at=None):
    record(enqueued_at)


@task()
def batch_done(batch_id, summary):
    """The on_complete callback of bench/batches.py."""
    return summary["succeeded"]
