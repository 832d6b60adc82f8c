"""Django's tasks framework, from wherever this Django has it: ``django.tasks`` (Django 6.0
and later) or the ``django-tasks`` backport package (module ``django_tasks``, Django 5.2).

The source is picked once, here; the rest of asyncjobs imports these names from this module
only (ruff's ``TID251`` bans ``django.tasks`` and ``django_tasks`` elsewhere). Code that has
to run on both (a reusable app, the example project) may import them from here as well.

The two differ in a few names and behaviours, which this module irons out:

- ``InvalidTask`` is ``InvalidTaskError`` in the backport; both are exported here as
  ``InvalidTask``. The backport's package does not export ``Task`` (its ``base`` does).
- ``normalize_json`` (what a task's arguments and return value become as JSON) is in
  ``django.utils.json`` on Django 6, and in the backport's ``utils``.
- The backport's signal receivers (the ``django.tasks`` log records), its system check and
  its ``setting_changed`` reset of ``task_backends`` are connected by its own app config,
  which a project may leave out of ``INSTALLED_APPS``; ``connect_backport()`` imports those
  modules, which connects them (``AsyncJobsConfig.ready`` calls it). Django 6 connects its
  own on import.
- Their log receivers write to the ``django.tasks`` logger on Django 6 and to
  ``django_tasks`` on the backport (``LOGGER_NAME``), which logs a failed task's end with
  ``logger.exception`` where Django 6 logs it at ERROR with the exception if there is one.
- Django 6.1's and the backport's ``@task`` hand options they do not know (asyncjobs'
  ``max_attempts``, ``timeout``...) to the backend's ``task_class``; Django 6.0's takes none.
  The ``task`` here does on every version (``FORWARDS_TASK_OPTIONS`` tells whether it is the
  framework's own): on Django 6.0, tasks with asyncjobs options are declared with it.
- Django 6's ``@task`` refuses a static ``run_after``; the backport's takes it. Neither
  matters to asyncjobs, which reads ``run_after`` from the task either way.
"""

import importlib
import inspect
from typing import Any

import django

# Whether the tasks framework comes from the backport, its package, and the logger its
# signal receivers write each task's enqueue, start and end to.
BACKPORT = django.VERSION < (6, 0)
SOURCE = "django_tasks" if BACKPORT else "django.tasks"
LOGGER_NAME = SOURCE

# mypy checks the Django 6 branch (``always_false`` in pyproject.toml): django-stubs types it.
if BACKPORT:  # pragma: no cover - run by the Django 5.2 sessions of the matrix
    from django_tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        signals,
        task,
        task_backends,
    )
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import (
        DEFAULT_TASK_PRIORITY,
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        Task,
        TaskError,
    )
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
    from django_tasks.utils import normalize_json
else:
    from django.tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        signals,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        DEFAULT_TASK_PRIORITY,
        TASK_MAX_PRIORITY,
        TASK_MIN_PRIORITY,
        TaskError,
    )
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.utils.json import normalize_json

# Whether the framework's ``@task`` hands keyword arguments it does not know to the backend's
# ``task_class`` (Django 6.1 and the backport do; Django 6.0's takes its own five only).
FORWARDS_TASK_OPTIONS = any(
    parameter.kind is inspect.Parameter.VAR_KEYWORD
    for parameter in inspect.signature(task).parameters.values()
)

if not FORWARDS_TASK_OPTIONS:  # pragma: no cover - run by the Django 6.0 sessions of the matrix
    _framework_task: Any = task

    def task(  # type: ignore[no-redef]
        function: Any = None,
        *,
        priority: int = DEFAULT_TASK_PRIORITY,
        queue_name: str = DEFAULT_TASK_QUEUE_NAME,
        backend: str = DEFAULT_TASK_BACKEND_ALIAS,
        takes_context: bool = False,
        **options: Any,
    ) -> Any:
        """Django's ``@task``, forwarding keyword arguments it does not know (asyncjobs'
        ``max_attempts``, ``backoff``, ``timeout``...) to the backend's ``task_class``, as
        Django 6.1 does; Django 6.0's own takes none. Without options it is Django's."""
        if not options:
            return _framework_task(
                function,
                priority=priority,
                queue_name=queue_name,
                backend=backend,
                takes_context=takes_context,
            )
        if "run_after" in options:
            raise TypeError(
                "run_after cannot be defined statically with the @task decorator. "
                "Use .using(run_after=...) to set it dynamically."
            )

        def wrapper(func: Any) -> Any:
            return task_backends[backend].task_class(
                priority=priority,
                func=func,
                queue_name=queue_name,
                backend=backend,
                takes_context=takes_context,
                run_after=None,
                **options,
            )

        return wrapper(function) if function else wrapper


task_enqueued = signals.task_enqueued
task_started = signals.task_started
task_finished = signals.task_finished


def connect_backport() -> None:
    """On the backport, connect what its app config would (its log receivers, its system
    check, its reset of ``task_backends`` on ``setting_changed``), in case ``django_tasks``
    is not in ``INSTALLED_APPS``. Importing a module twice connects nothing twice. A no-op
    on Django 6, whose ``django.tasks`` connects them on import."""
    if BACKPORT:  # pragma: no cover - covered by the Django 5.2 sessions of the matrix
        for module in ("signals", "checks"):
            importlib.import_module(f"{SOURCE}.{module}")


__all__ = [
    "BACKPORT",
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_QUEUE_NAME",
    "FORWARDS_TASK_OPTIONS",
    "LOGGER_NAME",
    "SOURCE",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "connect_backport",
    "default_task_backend",
    "normalize_json",
    "signals",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
