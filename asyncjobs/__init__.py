"""asyncjobs: database-backed background jobs for Django, as a ``django.tasks`` backend.

The public API is Django's own tasks framework (``from django.tasks import task``) plus the
functions re-exported here, which are imported lazily so that importing ``asyncjobs`` never
touches the app registry.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BatchClosedError",
    "Exponential",
    "Fixed",
    "JobCancelled",
    "Retry",
    "batch",
    "cancel_job",
    "chain",
    "current_batch",
    "enqueue_many",
    "get_batch",
    "retry_job",
    "step",
]

_LAZY = {
    "BatchClosedError": "asyncjobs.exceptions",
    "batch": "asyncjobs.batches",
    "current_batch": "asyncjobs.batches",
    "get_batch": "asyncjobs.batches",
    "Exponential": "asyncjobs.retry",
    "Fixed": "asyncjobs.retry",
    "JobCancelled": "asyncjobs.exceptions",
    "Retry": "asyncjobs.exceptions",
    "cancel_job": "asyncjobs.services",
    "retry_job": "asyncjobs.services",
    "enqueue_many": "asyncjobs.backend",
    "chain": "asyncjobs.chains",
    "step": "asyncjobs.chains",
}

if TYPE_CHECKING:
    from asyncjobs.backend import enqueue_many
    from asyncjobs.batches import batch, current_batch, get_batch
    from asyncjobs.chains import chain, step
    from asyncjobs.exceptions import BatchClosedError, JobCancelled, Retry
    from asyncjobs.retry import Exponential, Fixed
    from asyncjobs.services import cancel_job, retry_job


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncjobs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
