"""The worker's one asyncio event loop, on a thread of its own, where ``async def`` tasks run.

A slot thread that takes an async task hands its coroutine to the loop and waits for it, so
every async task of the worker shares one loop (and what a task keeps on it between jobs,
such as an HTTP client's connection pool) and as many run at once as the worker has slots.
The slot keeps the job's accounting, its timeout and its cancellation exactly as for a
synchronous task: the task's ``timeout`` is enforced inside the loop by
``asyncio.wait_for``, and when the watchdog interrupts the waiting slot (a timeout past its
grace period, ``--max-memory``) the coroutine is cancelled.

A task that blocks the loop (``time.sleep`` or a synchronous query in an ``async def``)
stalls every async task of the worker; Django's async ORM (``await Model.objects.aget()``)
runs its queries on a thread of its own, as ``sync_to_async`` does.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)

# Seconds a slot waits for its coroutine at a time: between two waits the watchdog's
# interruption of the slot (an exception raised in its thread) can land.
WAIT_SLICE = 0.25


class EventLoop:
    """One event loop on a daemon thread, started by the first coroutine it is given."""

    def __init__(self, name: str = "asyncjobs-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the loop and return its result (or raise its exception).
        If the calling thread is interrupted meanwhile, the coroutine is cancelled."""
        # The future exists before anything is scheduled, so that an interruption landing at
        # any point (even while the loop already starts the coroutine) can cancel it.
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        scheduled = False
        try:
            self._started().call_soon_threadsafe(self._start, coroutine, future)
            scheduled = True
            while True:
                done, _ = concurrent.futures.wait([future], timeout=WAIT_SLICE)
                if done:
                    return future.result()
        except BaseException:
            future.cancel()
            if not scheduled:
                coroutine.close()
            raise

    @staticmethod
    def _start(coroutine: Coroutine[Any, Any, Any], future: concurrent.futures.Future[Any]) -> None:
        """On the loop: run ``coroutine`` as a task whose outcome goes to ``future``, and
        which a cancelled ``future`` cancels."""
        if future.cancelled():
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)

        def settle(task: asyncio.Task[Any]) -> None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                if task.cancelled():
                    future.set_exception(asyncio.CancelledError())
                elif (error := task.exception()) is not None:
                    future.set_exception(error)
                else:
                    future.set_result(task.result())

        def cancel(future: concurrent.futures.Future[Any]) -> None:
            if future.cancelled():
                task.get_loop().call_soon_threadsafe(task.cancel)

        task.add_done_callback(settle)
        future.add_done_callback(cancel)

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name=self.name, daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            while True:
                try:
                    loop.run_forever()
                    break  # stop()
                except (KeyboardInterrupt, SystemExit):
                    # asyncio lets these out of the loop once the task that raised them has
                    # them as its outcome (which its slot records): the loop goes on.
                    continue
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            except Exception:
                logger.exception("closing the worker's event loop failed")
            finally:
                loop.close()
                connections.close_all()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and wait for its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
