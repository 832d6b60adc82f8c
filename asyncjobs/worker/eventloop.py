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
        # Who owns the coroutine is settled by the future's state, atomically: the loop takes
        # it by moving the future to running, this thread gives it up by cancelling the
        # future while it is still pending. An interruption landing at any point (even
        # while the loop already starts the coroutine) thus either closes a coroutine that
        # never ran, here, or cancels its task, on the loop; never both.
        call = _Call(coroutine)
        loop: asyncio.AbstractEventLoop | None = None
        try:
            loop = self._started()
            loop.call_soon_threadsafe(self._start, call)
            while True:
                done, _ = concurrent.futures.wait([call.future], timeout=WAIT_SLICE)
                if done:
                    return call.future.result()
        except BaseException:
            if call.future.cancel():
                coroutine.close()
            elif loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
                    loop.call_soon_threadsafe(call.cancel)
            raise

    @staticmethod
    def _start(call: "_Call") -> None:
        """On the loop: run the call's coroutine as a task whose outcome goes to its future,
        unless its slot gave it up first."""
        if not call.future.set_running_or_notify_cancel():
            return  # cancelled while pending: the slot closes the coroutine
        try:
            call.task = task = asyncio.get_running_loop().create_task(call.coroutine)
        except BaseException as error:  # (a task factory's): the slot must not wait for ever
            call.coroutine.close()
            call.future.set_exception(error)
            return

        def settle(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                call.future.set_exception(asyncio.CancelledError())
            elif (error := task.exception()) is not None:
                call.future.set_exception(error)
            else:
                call.future.set_result(task.result())

        task.add_done_callback(settle)

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


class _Call:
    """One coroutine handed to the loop: the future its slot waits on and, once the loop has
    taken it, its task (read and written on the loop's thread only)."""

    __slots__ = ("coroutine", "future", "task")

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        """On the loop, after its ``_start`` (callbacks run in order): cancel the task."""
        if self.task is not None:
            self.task.cancel()
