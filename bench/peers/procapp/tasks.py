from procrastinate.contrib.django import app

from bench.latency import record


@app.task(name="noop")
def noop(enqueued_at=None):
    record(enqueued_at)


# bench/io_bound.py: tasks that each wait BENCH_IO_WAIT seconds (0.2) in their own way.
import asyncio  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from django.contrib.contenttypes.models import ContentType  # noqa: E402

from bench import io_http  # noqa: E402

WAIT = float(os.environ.get("BENCH_IO_WAIT", "0.2"))


@app.task(name="sleep_sync")
def sleep_sync():
    time.sleep(WAIT)


@app.task(name="sleep_async")
async def sleep_async():
    await asyncio.sleep(WAIT)


@app.task(name="orm_sleep")
def orm_sleep():
    ContentType.objects.filter(app_label="auth").count()
    time.sleep(WAIT)


@app.task(name="orm_async")
async def orm_async():
    await ContentType.objects.filter(app_label="auth").acount()
    await asyncio.sleep(WAIT)


@app.task(name="http_async")
async def http_async():
    await io_http.get_async()


@app.task(name="http_aiohttp")
async def http_aiohttp():
    await io_http.get_aiohttp()


@app.task(name="http_httpcore")
async def http_httpcore():
    await io_http.get_httpcore()


@app.task(name="http_sync")
def http_sync():
    io_http.get_sync()


@app.task(name="http_httpx_sync")
def http_httpx_sync():
    io_http.get_httpcore_sync()
