"""Tasks of the batch tests (tests/test_batches*.py, chaos of batches)."""

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


@task(max_attempts=10, backoff=Fixed(0))
def slow_piece(n, seconds):
    """Works for ``seconds``: long enough to be running when its worker is killed."""
    time.sleep(seconds)
    return n


@task(max_attempts=1)
def hold_once(seconds):
    """Runs for ``seconds`` with no attempt to spare: a lost attempt fails it for good."""
    time.sleep(seconds)
    return seconds


@task()
def completed(batch_id, summary):
    """The on_complete callback of the runs with workers (a task of its own, to tell it from
    on_success and on_failure, which use ``finished``)."""
    return {"batch_id": batch_id, **summary}


@task(max_attempts=1)
def fail_while(path):
    """Fails while the file ``path`` exists (a retry after removing it succeeds)."""
    if Path(path).exists():
        raise ValueError(f"{path} still exists")
    return "ok"


@task(unique=True)
def unique_piece(n):
    return n
