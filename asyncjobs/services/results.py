"""Results as ``django.tasks`` shows them: a job's ``TaskResult``, and whether a signal that
carries one could have any effect (if not, neither is built nor sent)."""

from collections.abc import Callable

from django.dispatch import Signal

from asyncjobs.db import fastpath
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


# The ``TaskResult`` of a job, run as a task by a backend, with its attempts' errors and
# workers: ``fastpath.task_result`` itself (a call less on a path every job of a bulk
# enqueue takes), whose plain way, with the fast path off, is TaskResult's init.
task_result = fastpath.task_result
