"""The HTTP calls of the I/O-bound tasks (bench/io_bound.py), one set for every system's tasks
(bench/io_tasks.py, bench/peers/procapp/tasks.py, bench/peers/celery_io.py), so that each
runs the same call: a GET to ``BENCH_IO_URL``, the local server that answers after 0.2 s.

One client per process, made on first use (the async ones on the loop that runs the task),
as a task module keeps them:

- ``get_async``: httpx's ``AsyncClient`` on aiohttp's transport (httpx-aiohttp), its pool
  unbounded (the worker's concurrency bounds the requests in flight);
- ``get_aiohttp``: aiohttp's ``ClientSession`` itself, unbounded (the lightest client: what
  httpx's own layers cost on top of it shows against ``get_async``);
- ``get_httpcore``: httpx's ``AsyncClient`` on its own transport (httpcore), unbounded;
- ``get_httpcore_sync``: httpx's ``Client`` on its own transport, shared by threads;
- ``get_sync``: a ``requests.Session`` shared by threads, its pool ``BENCH_IO_POOL``
  connections (1,000: at least any concurrency the benchmark uses).

httpx's own transport (httpcore 1.0) does work per request that grows with the connections
in its pool (each request scans them all, several times): with hundreds of requests in
flight on one client it tops out near 60-110 requests/s on this machine, in a worker or in
a bare asyncio script alike (bench/README.md), which is why the main HTTP kind uses aiohttp's
transport. sniffio, when installed, spares httpcore a failed import on each request.
"""

import os

import aiohttp
import httpx
import requests
import requests.adapters
from httpx_aiohttp import AiohttpTransport

TIMEOUT = 30
POOL = int(os.environ.get("BENCH_IO_POOL", "1000"))

_async: httpx.AsyncClient | None = None
_aiohttp: aiohttp.ClientSession | None = None
_httpcore: httpx.AsyncClient | None = None
_httpcore_sync: httpx.Client | None = None
_session: requests.Session | None = None


def _url() -> str:
    return os.environ["BENCH_IO_URL"]


async def get_async() -> None:
    global _async
    if _async is None:
        _async = httpx.AsyncClient(
            timeout=TIMEOUT,
            transport=AiohttpTransport(
                client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            ),
        )
    (await _async.get(_url())).raise_for_status()


async def get_aiohttp() -> None:
    global _aiohttp
    if _aiohttp is None:
        _aiohttp = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        )
    async with _aiohttp.get(_url()) as response:
        await response.read()
        response.raise_for_status()


async def get_httpcore() -> None:
    global _httpcore
    if _httpcore is None:
        _httpcore = httpx.AsyncClient(timeout=TIMEOUT, limits=httpx.Limits(max_connections=None))
    (await _httpcore.get(_url())).raise_for_status()


def get_httpcore_sync() -> None:
    global _httpcore_sync
    if _httpcore_sync is None:
        _httpcore_sync = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=None))
    _httpcore_sync.get(_url()).raise_for_status()


def get_sync() -> None:
    global _session
    if _session is None:
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=POOL))
        _session = session
    _session.get(_url(), timeout=TIMEOUT).raise_for_status()
