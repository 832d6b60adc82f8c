"""The ``RUN_INLINE`` hook: with ``ASYNCJOBS = {"RUN_INLINE": True}``, each job runs in the
process that enqueued it, as soon as the transaction that enqueued it commits.

The app config connects ``run_inline`` to ``task_enqueued``. The worker's modules are
imported only when a job runs inline, never at start-up: a web process does not load the
worker to connect the hook.
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from asyncjobs.conf import jobs_settings
from asyncjobs.tasks_api import TaskResult, task_backends


def run_inline(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
    """``task_enqueued`` receiver: with ``RUN_INLINE``, run the job when its transaction
    commits (connected by the app config; does nothing otherwise)."""
    if not jobs_settings.RUN_INLINE:
        return
    backend = task_backends[task_result.backend]
    alias = getattr(backend, "database", None)
    if alias is None:
        return
    transaction.on_commit(lambda: _run_one(task_result.backend, task_result.id), using=alias)


def _run_one(backend_alias: str, job_id: str) -> None:
    """Claim the job as a worker would and run it in this thread (its failure is recorded,
    its retry scheduled, not run)."""
    from asyncjobs import services
    from asyncjobs.worker.executor import Executor
    from asyncjobs.worker.options import get_backend
    from asyncjobs.worker.slots import Execution

    backend = get_backend(backend_alias)
    worker_id = "inline"
    job = services.claim_job(
        job_id,
        worker_id=worker_id,
        now=timezone.now(),
        lease=jobs_settings.LEASE_DURATION,
        using=backend.database,
    )
    if job is not None:
        Executor(backend, worker_id, clock=timezone.now).run(Execution(job=job))
