"""The HTTP clients of bench/io_bound.py with no worker and no database: how many requests a
second each makes on this machine with many in flight, and the CPU each request costs.

    python bench/http_clients.py [--requests 5000] [--concurrency 500] [--clients ...]

Each client (bench/io_http.py: ``http`` httpx on aiohttp's transport, ``http_aiohttp``
aiohttp, ``http_httpcore`` httpx on its own transport, all from ``--concurrency`` coroutines
on one event loop; ``http_sync`` requests and ``http_httpx_sync`` httpx's sync Client, from as
many threads) sends ``--requests`` GETs to bench/peers/slow_http.py, which answers each after
0.2 s; ``raw`` is a bare asyncio stream per coroutine, the server's own ceiling. The bound is
concurrency / 0.2 s. Prints requests/s and CPU milliseconds per request (this process's).
Nothing is asserted.
"""

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import io_http
from bench.io_bound import slow_server

ASYNC: dict[str, Callable[[], Awaitable[None]]] = {
    "http": io_http.get_async,
    "http_aiohttp": io_http.get_aiohttp,
    "http_httpcore": io_http.get_httpcore,
}
SYNC: dict[str, Callable[[], None]] = {
    "http_sync": io_http.get_sync,
    "http_httpx_sync": io_http.get_httpcore_sync,
}
CLIENTS = ["raw", *ASYNC, *SYNC]


async def _raw(requests: int, concurrency: int) -> None:
    """One keep-alive asyncio stream per coroutine, requests split among them."""
    url = urlsplit(os.environ["BENCH_IO_URL"])
    head = f"GET / HTTP/1.1\r\nHost: {url.hostname}\r\n\r\n".encode()

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        for _ in range(n):
            writer.write(head)
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # "ok"
        writer.close()

    share, rest = divmod(requests, concurrency)
    await asyncio.gather(*(one(share + (i < rest)) for i in range(concurrency)))


async def _async(get: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await get()

    await asyncio.gather(*(one() for _ in range(requests)))


def _threads(get: Callable[[], None], requests: int, concurrency: int) -> None:
    left = iter(range(requests))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            get()

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(client: str, requests: int, concurrency: int) -> tuple[float, float]:
    """requests/s and CPU ms per request of one client."""
    began, cpu = time.perf_counter(), time.process_time()
    if client == "raw":
        asyncio.run(_raw(requests, concurrency))
    elif client in ASYNC:
        asyncio.run(_async(ASYNC[client], requests, concurrency))
    else:
        _threads(SYNC[client], requests, concurrency)
    wall, used = time.perf_counter() - began, time.process_time() - cpu
    return requests / wall, used / requests * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args()
    clients = args.clients.split(",")
    if unknown := set(clients) - set(CLIENTS):
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")
    with slow_server() as url:
        os.environ["BENCH_IO_URL"] = url
        print(
            f"{args.requests:,} GETs, {args.concurrency} at once, each answered after 0.2 s "
            f"(bound {args.concurrency / 0.2:,.0f}/s); load average {os.getloadavg()[0]:.1f}"
        )
        for client in clients:
            rate, cpu = measure(client, args.requests, args.concurrency)
            print(f"{client:16} {rate:8,.0f} requests/s  {cpu:6.2f} ms CPU per request")
        print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
