"""Tasks of the batch tests (tests/test_batches*.py, chaos of batches)."""

import os
import time
from pathlib import Path

from django.tasks import task

from asyncjobs import current_batch
from asyncjobs.retry import Fixed


@task()
def piece(n):
    return n


@task(max_attempts=1)
def broken(n):
    raise ValueError(f"piece {n} is broken")


@task(takes_context=True)
def spawn(context, children):
    """Add ``children`` jobs of ``piece`` to this job's own batch."""
    parent = current_batch(context)
    for n in range(children):
        parent.enqueue(piece, n)
    return children


@task()
def finished(batch_id, summary):
    """A callback: records that it ran."""
    return {"batch_id": batch_id, **summary}


@task(max_attempts=5, backoff=Fixed(0))
def slow_piece(n, seconds):
    """Sleeps, then records its run in ``$BATCH_CHAOS_DIR/runs`` (chaos runs)."""
    time.sleep(seconds)
    return n


@task()
def mark_callback(batch_id, summary):
    """A chaos callback: appends a line per run to ``$BATCH_CHAOS_DIR/callbacks``."""
    folder = os.environ.get("BATCH_CHAOS_DIR")
    if folder:
        with Path(folder, "callbacks").open("a") as out:
            out.write(f"{batch_id} {summary['state']}\n")
    return summary


@task(max_attempts=1)
def fail_while(path):
    """Fails while the file ``path`` exists (a retry after removing it succeeds)."""
    if Path(path).exists():
        raise ValueError(f"{path} still exists")
    return "ok"


@task(unique=True)
def unique_piece(n):
    return n
