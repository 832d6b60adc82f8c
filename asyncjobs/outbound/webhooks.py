"""Completion webhooks: the signed end-of-job notice, its delivery task, and
``verify_signature()`` for receivers."""

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.outbound.base import TaskContext, WebhookSignatureError, internal_task
from asyncjobs.outbound.http import raise_for_status, send

if TYPE_CHECKING:
    from asyncjobs.models import Batch, Job

SIGNATURE_HEADER = "AsyncJobs-Signature"


def _secrets(secret: str | bytes | Sequence[str | bytes] | None = None) -> list[bytes]:
    """The webhook keys, as bytes: ``secret``, else ``WEBHOOK_SECRET`` (one key or a list,
    the first signing). Raises ``ConfigurationError`` if there is none."""
    value = secret if secret is not None else jobs_settings.WEBHOOK_SECRET
    keys = [value] if isinstance(value, str | bytes) else value
    if (
        not isinstance(keys, list | tuple)
        or not keys
        or not all(isinstance(k, str | bytes) and k for k in keys)
    ):
        raise ConfigurationError(
            "Webhooks need ASYNCJOBS['WEBHOOK_SECRET']: a non-empty string, or a list of them "
            "(the first signs, any verifies)."
        )
    return [k.encode() if isinstance(k, str) else k for k in keys]


def _secret(secret: str | bytes | Sequence[str | bytes] | None = None) -> bytes:
    """The key that signs: the first of ``_secrets``."""
    return _secrets(secret)[0]


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(
    body: bytes,
    *,
    secret: str | bytes | Sequence[str | bytes] | None = None,
    timestamp: int | None = None,
) -> str:
    """The ``AsyncJobs-Signature`` header value for ``body``, signed with ``secret`` (default
    ``WEBHOOK_SECRET``; of a list, the first key)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(_secret(secret), t, body)}"


_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def verify_signature(
    body: bytes,
    header: str | None,
    *,
    secret: str | bytes | Sequence[str | bytes],
    tolerance: timedelta = timedelta(minutes=5),
    now: float | None = None,
) -> None:
    """Check a webhook's ``AsyncJobs-Signature`` header against its raw body.

    Raises ``WebhookSignatureError`` (and nothing else, whatever the header holds) if the
    header is missing or malformed, no ``v1`` signature matches any of the keys (tampered
    body, wrong secret), or the timestamp is further than ``tolerance`` from ``now`` (a
    replay). An empty or malformed ``secret`` raises ``ConfigurationError``.

    Parameters:
        body: the request body, as received (bytes, before any JSON parsing).
        header: the ``AsyncJobs-Signature`` header.
        secret: the shared ``WEBHOOK_SECRET``, or a list of keys during a rotation: the
            signature is accepted if it matches any of them.
        tolerance: how old (or early) a signature may be.
        now: the current Unix time (default ``time.time()``).
    """
    keys = _secrets(secret)  # a receiver's misconfiguration is not a bad signature
    if not header or not isinstance(header, str):
        raise WebhookSignatureError("Missing signature header.")
    if len(header) > 4096:
        raise WebhookSignatureError("Malformed signature header.")
    timestamps, given = [], []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            given.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]) or not given:
        raise WebhookSignatureError("Malformed signature header.")
    timestamp = int(timestamps[0])
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance.total_seconds():
        raise WebhookSignatureError("Signature timestamp outside the tolerance (replay?).")
    expected = [_digest(key, timestamp, body) for key in keys]
    # Compare every pair (ASCII only: compare_digest refuses other text) so that the time
    # taken says nothing about which key or signature came close.
    matched = False
    for value in given:
        if not _HEX_DIGEST.fullmatch(value):
            continue
        for digest in expected:
            matched |= hmac.compare_digest(digest, value)
    if not matched:
        raise WebhookSignatureError("Signature does not match.")


def webhook_payload(job: "Job") -> dict[str, object]:
    """The JSON notice sent when ``job`` ends."""
    payload: dict[str, object] = {
        "id": str(job.pk),
        "task": job.task_path,
        "queue": job.queue_name,
        "status": job.status,
        "attempts": job.attempts,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if job.status == "succeeded":
        payload["result"] = job.return_value
    else:
        last = job.attempt_set.exclude(error_class="").order_by("-number").first()
        if last is not None:
            payload["error"] = {"error_class": last.error_class, "message": last.error_message}
        elif job.last_error_class:  # ended without an attempt (a dependency failed)
            payload["error"] = {
                "error_class": job.last_error_class,
                "message": job.last_error_message,
            }
        else:
            payload["error"] = None
    return payload


@internal_task(takes_context=True)
def deliver_webhook(context: TaskContext, job_id: str, url: str) -> dict[str, object]:
    """POST the signed end-of-job notice of ``job_id`` to ``url`` (a job of its own, so it
    is retried like any job)."""
    from asyncjobs.models import Job

    context.raise_if_cancelled()
    job = Job.objects.using(context.database).get(pk=job_id)
    return _post_notice(context, url, webhook_payload(job), event=f"job.{job.status}")


def _post_notice(
    context: TaskContext, url: str, payload: dict[str, object], *, event: str
) -> dict[str, object]:
    """POST ``payload`` as signed JSON to ``url`` with the ``AsyncJobs-Event`` ``event``:
    the one request of job and batch webhook deliveries. A refused or failed answer raises
    (``raise_for_status``), so the delivery job is retried or fails."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "asyncjobs-webhook",
        "AsyncJobs-Event": event,
        "AsyncJobs-Delivery": context.job_id,
        SIGNATURE_HEADER: sign(body),
    }
    response = send("POST", url, headers=headers, content=body, cancel_event=context.cancel_event)
    context.record_http_status(response.status_code)
    raise_for_status(response, f"Webhook {url}")
    return {"status": response.status_code}


def batch_webhook_payload(batch: "Batch") -> dict[str, object]:
    """The JSON notice sent when ``batch`` finishes."""
    return {
        "id": str(batch.pk),
        "type": "batch",
        "description": batch.description,
        "state": str(batch.state),
        "total": batch.total,
        "succeeded": batch.succeeded,
        "failed": batch.failed,
        "cancelled": batch.cancelled,
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
    }


@internal_task(takes_context=True)
def deliver_batch_webhook(context: TaskContext, batch_id: str, url: str) -> dict[str, object]:
    """POST the signed notice of the end of batch ``batch_id`` to ``url`` (a job of its own,
    retried like any job, through the same guarded client as a job's webhook). The notice
    holds the batch's counts as the delivery reads them."""
    from asyncjobs.models import Batch

    context.raise_if_cancelled()
    batch = Batch.objects.using(context.database).counted().get(pk=batch_id)
    return _post_notice(context, url, batch_webhook_payload(batch), event=f"batch.{batch.state}")
