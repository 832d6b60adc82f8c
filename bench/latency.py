"""The enqueue-to-start probe every system's no-op task calls when the latency run passes it
``enqueued_at`` (the client's ``time.time()`` just before the enqueue call): the task's first
act is to append the delay to the file named by ``BENCH_LATENCY_FILE``. One clock, one
definition for every system: from the enqueue call to the first line of the task body."""

import os
import time


def record(enqueued_at: float | None) -> None:
    """Append ``now - enqueued_at`` (seconds) to ``BENCH_LATENCY_FILE``, if both are set."""
    if enqueued_at is None:
        return
    delay = time.time() - enqueued_at
    path = os.environ.get("BENCH_LATENCY_FILE")
    if path:
        with open(path, "a") as probe:
            probe.write(f"{delay}\n")


def read(path: str) -> list[float]:
    """The delays recorded so far, in order."""
    try:
        with open(path) as probe:
            return [float(line) for line in probe.read().split("\n") if line]
    except FileNotFoundError:
        return []
