"""The task of the soak run (bench/soak.py)."""

import os
import time
from datetime import timedelta

from asyncjobs import Fixed
from asyncjobs.tasks_api import task


@task(max_attempts=3, backoff=Fixed(timedelta(seconds=1)), takes_context=True)
def soak(context, enqueued_at: float, fail: bool = False) -> None:
    """Record the pickup latency of a first attempt (``<now> <delay>`` appended to
    ``BENCH_LATENCY_FILE``, so the run can bucket it by minute); fail that first attempt when
    told to, so that the job goes through a retry."""
    if context.attempt != 1:
        return
    now = time.time()
    path = os.environ.get("BENCH_LATENCY_FILE")
    if path:
        with open(path, "a") as probe:
            probe.write(f"{now} {now - enqueued_at}\n")
    if fail:
        raise RuntimeError("soak: a planned failure, retried")
