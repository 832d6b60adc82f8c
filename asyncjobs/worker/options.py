"""A worker's options: checked before anything starts (``ConfigurationError`` for a bad
value) and resolved against the ``ASYNCJOBS`` settings where left unset (see ``Runner``)."""

from collections.abc import Sequence
from datetime import timedelta

from asyncjobs import db
from asyncjobs.backend import JobsBackend
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.tasks_api import task_backends
from asyncjobs.worker.watchdog import resident_mib


def get_backend(alias: str) -> JobsBackend:
    """The asyncjobs backend configured as ``TASKS[alias]``."""
    backend = task_backends[alias]
    if not isinstance(backend, JobsBackend):
        raise ConfigurationError(
            f"TASKS[{alias!r}] uses {type(backend).__name__}, not asyncjobs.backend.JobsBackend."
        )
    return backend


def max_connections(value: int | None) -> int | None:
    """The bound on the slot threads' connections per database (None: no bound); default
    ``MAX_DB_CONNECTIONS``."""
    if value is None:
        value = jobs_settings.MAX_DB_CONNECTIONS
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"max_connections must be 0 or more (0: no bound), not {value!r}.")
    return value or None


def prefetch(value: int | None) -> int:
    """How many jobs may be claimed ahead of free slots; default ``WORKER_PREFETCH``."""
    value = jobs_settings.WORKER_PREFETCH if value is None else value
    if not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"prefetch must be 0 or more, not {value!r}.")
    return value


def max_memory(value: int | None) -> int | None:
    """The resident memory limit in MiB (None: none); default ``WORKER_MAX_MEMORY``."""
    value = value or jobs_settings.WORKER_MAX_MEMORY
    if value is not None and resident_mib() is None:
        raise ConfigurationError(
            "max_memory needs /proc/self/statm (Linux); run without a memory limit here."
        )
    return value


def queues(backend: JobsBackend, names: Sequence[str] | None) -> list[str] | None:
    """The queues to take jobs from: ``names`` (each one of the backend's queues, if it lists
    any), else the backend's queues, else None (every queue)."""
    if names:
        unknown = set(names) - backend.queues if backend.queues else set()
        if unknown:
            raise ConfigurationError(
                f"Queues {sorted(unknown)} are not in TASKS[{backend.alias!r}]['QUEUES'] "
                f"({sorted(backend.queues)})."
            )
        return list(dict.fromkeys(names))
    return sorted(backend.queues) or None


def poll_interval(strategy: db.ClaimStrategy, value: timedelta | None) -> float:
    """Seconds between looks at the queue when idle: ``value``, else ``POLL_INTERVAL`` where
    the project sets it, else the database's own default."""
    if value is None and "POLL_INTERVAL" not in jobs_settings.user_settings:
        value = db.default_poll_interval(strategy)
    return (value or jobs_settings.POLL_INTERVAL).total_seconds()
