"""The I/O-bound tasks of bench/io_bound.py: each waits ``BENCH_IO_WAIT`` seconds (0.2) in its
own way. ``BENCH_IO_URL`` is the local server that answers after that wait."""

import asyncio
import os
import time

import httpx
from django.contrib.contenttypes.models import ContentType

from asyncjobs.tasks_api import task

WAIT = float(os.environ.get("BENCH_IO_WAIT", "0.2"))


@task()
def sleep_sync():
    time.sleep(WAIT)


@task()
async def sleep_async():
    await asyncio.sleep(WAIT)


@task()
def orm_sleep():
    # "Load the record, call the API": one query, then the wait, the connection still open.
    ContentType.objects.filter(app_label="auth").count()
    time.sleep(WAIT)


_client: httpx.AsyncClient | None = None


@task()
async def http_async():
    # One client for the worker's event loop, as an async task would keep it.
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None))
    response = await _client.get(os.environ["BENCH_IO_URL"])
    response.raise_for_status()


@task()
async def orm_async():
    # The same on the async ORM: the query runs on Django's sync_to_async thread.
    await ContentType.objects.filter(app_label="auth").acount()
    await asyncio.sleep(WAIT)
