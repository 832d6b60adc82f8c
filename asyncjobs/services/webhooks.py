"""The jobs that call out: the end-of-job webhook of a job, enqueued in the transaction that
ends it, and HTTP callback jobs (``enqueue_callback``). The calls themselves are
``asyncjobs.outbound``'s."""

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from asyncjobs import outbound, retry
from asyncjobs.conf import jobs_settings
from asyncjobs.models import Job
from asyncjobs.services.enqueue import build_job, enqueue_jobs
from asyncjobs.services.policy import JobOptions, class_path, resolve_options

WEBHOOK_TASK = "asyncjobs.outbound.deliver_webhook"
CALLBACK_TASK = "asyncjobs.outbound.call_url"
# Outbound calls fail at once on a refused URL or a 4xx that retrying will not fix.
OUTBOUND_FAIL_ON = (
    class_path(outbound.PermanentHTTPError),
    class_path(outbound.OutboundURLRefusedError),
)


def schedule_webhook(job: Job, *, now: datetime, using: str) -> None:
    """Enqueue the delivery of ``job``'s end-of-job webhook, in the caller's transaction.

    The delivery is a job of its own (retried with exponential backoff), so the notice is
    sent if and only if the end of the job commits.
    """
    if not job.webhook_url or job.task_path == WEBHOOK_TASK:
        return
    schedule_delivery(
        WEBHOOK_TASK,
        {"job_id": str(job.pk), "url": job.webhook_url},
        queue=jobs_settings.WEBHOOK_QUEUE or job.queue_name,
        priority=job.priority,
        backend=job.backend,
        enqueued_by_id=job.enqueued_by_id,
        now=now,
        using=using,
    )


def schedule_delivery(
    task_path: str,
    kwargs: dict[str, Any],
    *,
    queue: str,
    priority: int,
    backend: str,
    enqueued_by_id: Any,
    now: datetime,
    using: str,
) -> Job:
    """Store a webhook delivery job (``task_path`` called with ``kwargs``) in the caller's
    transaction, with the webhook retry policy: ``WEBHOOK_MAX_ATTEMPTS`` attempts, every
    error retried but a refused URL or a final 4xx, and twice the request's deadline for the
    whole attempt. The one builder of job and batch webhook deliveries."""
    options = dataclasses.replace(
        resolve_options(
            queue,
            max_attempts=jobs_settings.WEBHOOK_MAX_ATTEMPTS,
            retry_on=(Exception,),
            fail_on=OUTBOUND_FAIL_ON,
        ),
        # The request has its own deadline, OUTBOUND_TIMEOUT; this bounds the whole job.
        timeout=jobs_settings.OUTBOUND_TIMEOUT * 2,
    )
    delivery = build_job(
        task_path=task_path,
        args=(),
        kwargs=kwargs,
        queue_name=queue,
        priority=priority,
        run_after=None,
        backend=backend,
        options=options,
        now=now,
    )
    delivery.enqueued_by_id = enqueued_by_id
    delivery.save(using=using, force_insert=True)
    return delivery


def enqueue_callback(
    *,
    url: str,
    payload: object = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    max_attempts: int = 4,
    backoff: retry.Backoff | None = None,
    priority: int = 0,
    run_after: datetime | None = None,
    queue_name: str = "default",
    webhook_url: str = "",
    unique_key: str | None = None,
    timeout: timedelta | None = None,
    backend: str = "default",
    now: datetime,
    using: str = "default",
) -> tuple[Job, bool]:
    """Enqueue an HTTP callback job: a worker sends ``payload`` as JSON to ``url``.

    2xx succeeds; 408, 425, 429, 5xx, timeouts and connection errors are retried with
    ``backoff``; other 4xx and refused URLs fail at once. With ``unique_key``, an existing job
    with that key is returned instead. Returns (job, created). Raises
    ``OutboundURLRefusedError`` for a URL that may not be called and ``InvalidHeaderError``
    for headers that cannot be sent.
    """
    outbound.validate_url(url)
    headers = outbound.check_headers(headers or {})
    options = JobOptions(
        max_attempts=max_attempts,
        backoff=backoff or retry.DEFAULT_BACKOFF,
        retry_on=("builtins.Exception",),
        fail_on=OUTBOUND_FAIL_ON,
        timeout=timeout or jobs_settings.OUTBOUND_TIMEOUT * 2,
    )
    job = build_job(
        task_path=CALLBACK_TASK,
        args=(),
        kwargs={"url": url, "method": method, "headers": headers, "payload": payload},
        queue_name=queue_name,
        priority=priority,
        run_after=run_after,
        backend=backend,
        options=options,
        now=now,
        webhook_url=webhook_url,
        unique_key=unique_key,
        unique_for=jobs_settings.IDEMPOTENCY_KEY_TTL,
    )
    stored = enqueue_jobs([job], using=using, now=now)[0]
    return stored, stored is job
