"""Results as ``django.tasks`` shows them: a job's ``TaskResult``, and whether a signal that
carries one could have any effect (if not, neither is built nor sent)."""

from collections.abc import Callable

from django.dispatch import Signal

from asyncjobs.db import fastpath
from asyncjobs.models import Job
from asyncjobs.tasks_api import Task, TaskError, TaskResult
from asyncjobs.tasks_api import signals as task_signals

# Receivers that do nothing in some states, with what tells whether one would act now on a
# record of the given level: Django's own, which log each task's enqueue (DEBUG), start and
# end on the django.tasks logger, and asyncjobs' RUN_INLINE hook (see apps.py).
_RECEIVER_ACTIVE: dict[Callable[..., object], Callable[[int], bool]] = {
    task_signals.log_task_enqueued: task_signals.logger.isEnabledFor,
    task_signals.log_task_started: task_signals.logger.isEnabledFor,
    task_signals.log_task_finished: task_signals.logger.isEnabledFor,
}


def receiver_acts_when(receiver: Callable[..., object], active: Callable[[int], bool]) -> None:
    """Declare that ``receiver`` does nothing unless ``active(level)``; see ``observed``."""
    _RECEIVER_ACTIVE[receiver] = active


def observed(signal: Signal, sender: type, level: int) -> bool:
    """Whether sending ``signal`` from ``sender`` could have any effect.

    Not when nothing listens, nor when every receiver is one that would do nothing now
    (Django's log receivers while the ``django.tasks`` logger drops records of ``level``,
    the RUN_INLINE hook while that is off): then the signal need not be sent, nor, in the
    worker, the ``TaskResult`` it carries built (two per job; see bench/HISTORY.md, "Worker
    CPU per job" and "Bulk enqueue: no signal nobody hears"). Any other receiver sends; so
    does every signal with the fast path off, which alone reads Django's private list of
    receivers (``fastpath.live_receivers``)."""
    receivers = fastpath.live_receivers(signal, sender)
    if receivers is None:
        return True
    sync, asynchronous = receivers
    if asynchronous:
        return True
    for connected in sync:
        active = _RECEIVER_ACTIVE.get(connected)
        if active is None or active(level):
            return True
    return False


def task_result(
    job: Job, *, task: Task, backend: str, errors: list[TaskError], worker_ids: list[str]
) -> TaskResult:
    """The ``TaskResult`` of ``job`` run as ``task`` by the backend ``backend``, with the
    errors and workers of its attempts."""
    return fastpath.task_result(
        fastpath.ResultFields(
            task=task,
            id=str(job.pk),
            status=job.task_result_status,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            last_attempted_at=job.last_attempted_at,
            args=job.args,
            kwargs=job.kwargs,
            backend=backend,
            errors=errors,
            worker_ids=worker_ids,
        ),
        job.return_value,
    )
