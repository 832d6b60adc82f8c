"""The I/O-bound tasks of bench/io_bound.py: each waits ``BENCH_IO_WAIT`` seconds (0.2) in its
own way. ``BENCH_IO_URL`` is the local server that answers after that wait (the HTTP calls
are bench/io_http.py's, shared with the peers' tasks)."""

import asyncio
import os
import time

from django.contrib.contenttypes.models import ContentType

from asyncjobs.tasks_api import task
from bench import io_http

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


@task()
async def http_async():
    await io_http.get_async()


@task()
async def http_aiohttp():
    await io_http.get_aiohttp()


@task()
async def http_httpcore():
    await io_http.get_httpcore()


@task()
def http_sync():
    io_http.get_sync()


@task()
def http_httpx_sync():
    io_http.get_httpcore_sync()


@task()
async def orm_async():
    # The same on the async ORM: the query runs on Django's sync_to_async thread.
    await ContentType.objects.filter(app_label="auth").acount()
    await asyncio.sleep(WAIT)
