"""Chains: tasks that run one after the other, each given the previous one's return value.

::

    from asyncjobs import chain, step

    results = chain(
        step(fetch_report, report_id),
        step(render_pdf),
        step(email_pdf, user_id=user.pk),
    ).enqueue()

``render_pdf`` runs once ``fetch_report`` has succeeded, called as
``render_pdf(<fetch_report's return value>)``; ``email_pdf`` as
``email_pdf(<render_pdf's return value>, user_id=...)``: the previous return value comes first
among the positional arguments (Celery's convention). A step is ``step(task, *args,
**kwargs)``, or a task alone for a step with no arguments of its own; tasks may carry
``.using(...)`` options. If a step fails for good or is cancelled, the steps after it are
cancelled. Built on ``depends_on`` (``asyncjobs.services.dependencies``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from asyncjobs import services
from asyncjobs.backend import JobsBackend
from asyncjobs.tasks_api import Task, TaskResult, task_backends


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a chain: a task and the arguments it is called with (after the previous
    step's return value, for every step but the first)."""

    task: Task
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def step(task: Task, /, *args: Any, **kwargs: Any) -> Step:
    """A chain step: ``task`` called with ``args`` and ``kwargs`` (see ``chain``)."""
    if not isinstance(task, Task):
        raise TypeError(f"A chain step needs a task (decorated with @task), not {task!r}.")
    return Step(task, args, dict(kwargs))


class Chain:
    """Steps to enqueue together (see ``chain``)."""

    def __init__(self, steps: tuple[Step, ...]) -> None:
        self.steps = steps

    def enqueue(self) -> list[TaskResult]:
        """Store every step's job in one transaction (the caller's, if there is one), all or
        none; return their results, in order (the last one is the chain's outcome).

        Raises what ``Task.enqueue`` raises for a step (non-JSON arguments, a full queue, a
        job in the first step's ``depends_on`` that does not exist), storing nothing."""
        backend = _backend(self.steps)
        now = timezone.now()
        results: list[TaskResult] = []
        with transaction.atomic(using=backend.database):
            for index, item in enumerate(self.steps):
                if index == 0:
                    need = backend.requirement(item.task)
                else:
                    need = services.Requirement(parents=(results[-1].id,), pass_result=True)
                results.append(
                    backend.enqueue_job(item.task, item.args, dict(item.kwargs), need, now)
                )
        return results

    def __repr__(self) -> str:
        return f"chain({', '.join(s.task.module_path for s in self.steps)})"


def chain(*steps: Step | Task) -> Chain:
    """Tasks to run one after the other, each called with the previous one's return value
    first among its positional arguments; ``.enqueue()`` stores them all in one transaction.

    Each argument is ``step(task, *args, **kwargs)`` or a task (no arguments of its own).
    Only the first step may have ``depends_on``: the others depend on the step before them.
    Raises ``ValueError`` for an empty chain or a later step with ``depends_on``, and
    ``TypeError`` for something that is not a step."""
    if not steps:
        raise ValueError("A chain needs at least one step.")
    made = tuple(s if isinstance(s, Step) else step(s) for s in steps)
    for later in made[1:]:
        if getattr(later.task, "depends_on", None):
            raise ValueError(
                f"Step {later.task.module_path} of a chain depends on the step before it; "
                "only the first step may have depends_on."
            )
    return Chain(made)


def _backend(steps: tuple[Step, ...]) -> JobsBackend:
    aliases = {s.task.backend for s in steps}
    if len(aliases) != 1:
        raise ValueError(f"A chain needs tasks of one backend, got {sorted(aliases)}.")
    backend = task_backends[aliases.pop()]
    if not isinstance(backend, JobsBackend):
        raise TypeError(f"A chain needs an asyncjobs backend, not {type(backend).__name__}.")
    return backend
