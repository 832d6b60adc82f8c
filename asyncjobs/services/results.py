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
    _HEARD.clear()


# Per signal and sender, what ``observed`` worked out from the receivers it saw (see
# ``_hearing``), with what they were (``fastpath.receivers_seen``).
_HEARD: dict[
    tuple[Signal, type], tuple[fastpath.Seen, tuple[Callable[[int], bool], ...] | None]
] = {}


def observed(signal: Signal, sender: type, level: int) -> bool:
    """Whether sending ``signal`` from ``sender`` could have any effect.

    Not when nothing listens, nor when every receiver is one that would do nothing now
    (Django's log receivers while the ``django.tasks`` logger drops records of ``level``,
    the RUN_INLINE hook while that is off): then the signal need not be sent, nor, in the
    worker, the ``TaskResult`` it carries built (two per job; see bench/HISTORY.md, "Worker
    CPU per job" and "Bulk enqueue: no signal nobody hears"). Any other receiver sends; so
    does every signal with the fast path off, which alone reads Django's private list of
    receivers (``fastpath.live_receivers``).

    Asked on every enqueue and every job's start and end: what the receivers are is
    remembered while they stay the same (``fastpath.same_receivers``; a receiver connected or
    disconnected since is seen at once), and only whether each would act now is asked
    again."""
    key = (signal, sender)
    heard = _HEARD.get(key)
    if heard is not None and fastpath.same_receivers(signal, heard[0]):
        actives = heard[1]
    else:
        seen = fastpath.receivers_seen(signal)  # (before the receivers are read)
        actives = _hearing(signal, sender)
        if seen is not None:
            if len(_HEARD) >= 64:  # (a few signals and senders: bounded all the same)
                _HEARD.clear()
            _HEARD[key] = (seen, actives)
    if actives is None:
        return True
    return any(active(level) for active in actives)


def _hearing(signal: Signal, sender: type) -> tuple[Callable[[int], bool], ...] | None:
    """What tells whether ``signal`` from ``sender`` is heard: None if it always is (a
    receiver that may act at any time, or the receivers cannot be read), else the
    ``active`` tests of its receivers (see ``receiver_acts_when``), any of which, true for a
    record's level, has it heard."""
    receivers = fastpath.live_receivers(signal, sender)
    if receivers is None:
        return None
    sync, asynchronous = receivers
    if asynchronous:
        return None
    actives = []
    for connected in sync:
        active = _RECEIVER_ACTIVE.get(connected)
        if active is None:
            return None
        actives.append(active)
    return tuple(actives)


# The ``TaskResult`` of a job, run as a task by a backend, with its attempts' errors and
# workers: ``fastpath.task_result`` itself (a call less on a path every job of a bulk
# enqueue takes), whose plain way, with the fast path off, is TaskResult's init.
task_result = fastpath.task_result
