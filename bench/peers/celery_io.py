"""Celery (Redis broker, thread pool) running bench/io_bound.py's I/O-bound tasks, with
Django set up (bench.peers.settings_celery) for the one that queries the ORM. Each task
counts itself in Redis, as done or failed."""

import os
import time

import django
import redis
from celery import Celery
from celery.signals import task_failure, task_success

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings_celery")
django.setup()

from django.contrib.contenttypes.models import ContentType  # noqa: E402

from bench import io_http  # noqa: E402

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/15")
WAIT = float(os.environ.get("BENCH_IO_WAIT", "0.2"))
app = Celery("bench_io", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)
counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="sleep_sync")
def sleep_sync():
    time.sleep(WAIT)


@app.task(name="orm_sleep")
def orm_sleep():
    ContentType.objects.filter(app_label="auth").count()
    time.sleep(WAIT)


@app.task(name="http_sync")
def http_sync():
    io_http.get_sync()


@app.task(name="http_httpcore")
def http_httpcore():
    # Celery has no async tasks: httpx's sync Client on its own transport, shared by threads.
    io_http.get_httpcore_sync()


@app.task(name="http_httpx_sync")
def http_httpx_sync():
    io_http.get_httpcore_sync()


@task_success.connect
def _done(**kwargs):
    counter.incr("bench:io:done")


@task_failure.connect
def _failed(**kwargs):
    counter.incr("bench:io:done")
    counter.incr("bench:io:failed")
