"""Celery with a local Redis as broker; the no-op task counts itself in Redis (INCR), which
is how the harness sees it finish, and records its start delay for the latency run
(``bench.latency``)."""

import os

import redis
from celery import Celery

from bench.latency import record

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("bench_peers", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)
counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="noop")
def noop(enqueued_at=None):
    record(enqueued_at)
    counter.incr("bench:done")
