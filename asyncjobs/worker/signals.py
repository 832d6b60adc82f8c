"""SIGTERM and SIGINT for a worker process: the first stops it gracefully, a second ends it at
once (leases recover what it held)."""

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)


class StopSignals:
    """Turns SIGTERM and SIGINT into ``stop()`` of a worker.

    A Python signal handler runs in the main thread between any two bytecodes, possibly
    while that thread holds a lock, an ``Event``'s own included (the main loop sleeps and
    wakes on Events all the time). Setting an Event from the handler could then wait forever
    on a lock its own thread holds: a worker hung on SIGTERM that way. So the handler takes
    no lock; it writes the signal's number to a pipe, and a thread of its own reads it, logs
    it and calls ``stop``.

    Parameters:
        worker_id: the worker's id, for the log.
        stop: asks the worker to stop gracefully.
        shutdown_timeout: how long running jobs may take to finish (for the log).
    """

    def __init__(
        self, *, worker_id: str, stop: Callable[[], None], shutdown_timeout: timedelta
    ) -> None:
        self.worker_id = worker_id
        self.stop = stop
        self.shutdown_timeout = shutdown_timeout
        self._count = 0
        self._fd: int | None = None  # written by the signal handler
        self._old_handlers: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (from the main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        read_fd, self._fd = os.pipe()
        os.set_blocking(self._fd, False)
        threading.Thread(
            target=self._loop, args=(read_fd,), name="asyncjobs-signals", daemon=True
        ).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Put back the handlers found at ``install``, and end the signal thread."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the signal thread reads end-of-file and ends

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No lock, no logging here (see the class docstring).
        self._count += 1
        if self._count > 1:
            os.write(2, f"Worker {self.worker_id}: second signal, exiting now\n".encode())
            os._exit(1)
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, bytes([signum]))

    def _loop(self, read_fd: int) -> None:
        try:
            while data := os.read(read_fd, 1):
                logger.info(
                    "Worker %s: %s received; finishing running jobs (up to %ss)",
                    self.worker_id,
                    signal.Signals(data[0]).name,
                    self.shutdown_timeout.total_seconds(),
                )
                self.stop()
        finally:
            os.close(read_fd)
