"""Outbound HTTP: the callback jobs and completion webhooks asyncjobs sends itself.

Every request goes through ``send()``, which refuses what it must not call:

- the URL must be http(s) and match ``OUTBOUND_ALLOWED_URLS``;
- the host is resolved once and every address must be public, unless it lies in
  ``OUTBOUND_ALLOWED_NETWORKS``: loopback, private, link-local (cloud metadata), shared,
  reserved and multicast addresses are refused;
- the connection goes to the address that was checked (the hostname travels in ``Host`` and
  TLS SNI), so DNS cannot answer differently between the check and the call;
- redirects are followed by hand, and each location is checked the same way.

Webhooks are signed: ``AsyncJobs-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` with ``WEBHOOK_SECRET``; receivers check it with ``verify_signature()``.
"""

import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import AsyncJobsError, ConfigurationError, Retry

SIGNATURE_HEADER = "AsyncJobs-Signature"
RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


class OutboundURLRefusedError(AsyncJobsError, ValueError):
    """Raised when a callback or webhook URL is not allowed: not http(s), not on the
    allow-list, or resolving to an address that is not public. Never retried."""


class PermanentHTTPError(AsyncJobsError):
    """Raised when a callback or webhook answers a 4xx status that retrying will not fix.
    The job fails at once. ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class RetryableHTTPError(AsyncJobsError):
    """Raised when a callback or webhook answers 408, 425, 429 or 5xx: retried with the job's
    backoff. ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class WebhookSignatureError(AsyncJobsError, ValueError):
    """Raised by ``verify_signature`` for a missing, malformed, wrong or stale signature."""


def internal_task(*, takes_context: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """Mark a function as a task asyncjobs enqueues itself. Unlike ``@task`` it needs no
    configured backend or queue at import time; the worker wraps it when it runs a job."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.asyncjobs_internal = {"takes_context": takes_context}  # type: ignore[attr-defined]
        return func

    return mark


# --- URL and address checks --------------------------------------------------------------


def check_url(url: str) -> Any:
    """Parse ``url`` and check its scheme and the allow-list (no DNS). Returns the parts.

    Raises ``OutboundURLRefusedError``.
    """
    if not isinstance(url, str) or len(url) > 2000:
        raise OutboundURLRefusedError("The URL must be a string of at most 2000 characters.")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise OutboundURLRefusedError(f"Only absolute http(s) URLs can be called, not {url!r}.")
    if parts.username or parts.password:
        raise OutboundURLRefusedError("URLs with credentials are refused; use headers.")
    patterns = jobs_settings.OUTBOUND_ALLOWED_URLS
    if not any(re.match(pattern, url) for pattern in patterns):
        raise OutboundURLRefusedError(
            f"{url!r} is not allowed by ASYNCJOBS['OUTBOUND_ALLOWED_URLS']."
        )
    return parts


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in jobs_settings.OUTBOUND_ALLOWED_NETWORKS:
        if ip in ipaddress.ip_network(network, strict=False):
            return True
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> str:
    """The address to connect to for ``host``: every address it resolves to must be
    allowed. Raises ``OutboundURLRefusedError``; DNS failures raise ``OSError`` (retried)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not _address_allowed(a)]
    if refused or not addresses:
        raise OutboundURLRefusedError(
            f"{host} resolves to {', '.join(refused) or 'nothing'}, which is not a public "
            "address (see ASYNCJOBS['OUTBOUND_ALLOWED_NETWORKS'])."
        )
    return addresses[0]


def validate_url(url: str) -> None:
    """Everything ``send`` checks, for use at enqueue: raises ``OutboundURLRefusedError``."""
    parts = check_url(url)
    # A DNS failure is not a refusal: the name may resolve by the time the job runs, and
    # send() checks again then.
    with contextlib.suppress(OSError):
        resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def send(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    timeout: timedelta | None = None,
) -> httpx.Response:
    """Make one request with the checks of the module docstring. Raises
    ``OutboundURLRefusedError``, or httpx's errors for timeouts and connection failures."""
    seconds = (timeout or jobs_settings.OUTBOUND_TIMEOUT).total_seconds()
    with httpx.Client(timeout=seconds, follow_redirects=False, trust_env=False) as client:
        for _ in range(jobs_settings.OUTBOUND_MAX_REDIRECTS + 1):
            parts = check_url(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = resolve(parts.hostname, port)
            literal = f"[{address}]" if ":" in address else address
            target = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
            request = httpx.Request(
                method,
                target,
                headers={**(headers or {}), "Host": parts.netloc},
                content=content,
                extensions={"sni_hostname": parts.hostname} if parts.scheme == "https" else {},
            )
            response = client.send(request)
            location = response.headers.get("location")
            if not (response.is_redirect and location):
                return response
            url = urljoin(url, location)
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, content = "GET", None
        limit = jobs_settings.OUTBOUND_MAX_REDIRECTS
        raise OutboundURLRefusedError(f"More than {limit} redirects.")


def _classify(response: httpx.Response, what: str) -> None:
    """Raise for a non-2xx response: retryable or permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{what} answered HTTP {status}"
    if status in RETRYABLE_STATUSES:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isdigit():
            raise Retry(delay=timedelta(seconds=min(int(retry_after), 3600)), reason=message)
        raise RetryableHTTPError(status, message)
    raise PermanentHTTPError(status, message)


# --- Signatures --------------------------------------------------------------------------


def _secret(secret: str | bytes | None = None) -> bytes:
    value = secret if secret is not None else jobs_settings.WEBHOOK_SECRET
    if not value:
        raise ConfigurationError("Webhooks need ASYNCJOBS['WEBHOOK_SECRET'].")
    return value.encode() if isinstance(value, str) else value


def sign(body: bytes, *, secret: str | bytes | None = None, timestamp: int | None = None) -> str:
    """The ``AsyncJobs-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(_secret(secret), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    body: bytes,
    header: str | None,
    *,
    secret: str | bytes,
    tolerance: timedelta = timedelta(minutes=5),
    now: float | None = None,
) -> None:
    """Check a webhook's ``AsyncJobs-Signature`` header against its raw body.

    Raises ``WebhookSignatureError`` if the header is missing or malformed, the HMAC does not
    match (tampered body, wrong secret), or the timestamp is further than ``tolerance`` from
    ``now`` (a replay).

    Parameters:
        body: the request body, as received (bytes, before any JSON parsing).
        header: the ``AsyncJobs-Signature`` header.
        secret: the shared ``WEBHOOK_SECRET``.
        tolerance: how old (or early) a signature may be.
        now: the current Unix time (default ``time.time()``).
    """
    if not header:
        raise WebhookSignatureError("Missing signature header.")
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError) as exc:
        raise WebhookSignatureError("Malformed signature header.") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance.total_seconds():
        raise WebhookSignatureError("Signature timestamp outside the tolerance (replay?).")
    expected = sign(body, secret=secret, timestamp=timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise WebhookSignatureError("Signature does not match.")


# --- The tasks ---------------------------------------------------------------------------


@internal_task(takes_context=True)
def call_url(
    context: Any,
    url: str,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    payload: Any = None,
) -> dict[str, Any]:
    """An HTTP callback job: send ``payload`` as JSON to ``url``.

    2xx succeeds (the status and the start of the body are the result); 408, 425, 429, 5xx,
    timeouts and connection errors are retried; other 4xx fail at once. Every attempt
    records its HTTP status.
    """
    content = None if payload is None else json.dumps(payload).encode()
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    response = send(method, url, headers=request_headers, content=content)
    context.record_http_status(response.status_code)
    _classify(response, f"{method} {url}")
    return {
        "status": response.status_code,
        "body": response.text[: jobs_settings.CALLBACK_RESPONSE_LIMIT],
    }


def webhook_payload(job: Any) -> dict[str, Any]:
    """The JSON notice sent when ``job`` ends."""
    payload: dict[str, Any] = {
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
        payload["error"] = (
            {"error_class": last.error_class, "message": last.error_message} if last else None
        )
    return payload


@internal_task(takes_context=True)
def deliver_webhook(context: Any, job_id: str, url: str) -> dict[str, Any]:
    """POST the signed end-of-job notice of ``job_id`` to ``url`` (a job of its own, so it
    is retried like any job)."""
    from asyncjobs.models import Job

    job = Job.objects.using(context.database).get(pk=job_id)
    body = json.dumps(webhook_payload(job), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "asyncjobs-webhook",
        "AsyncJobs-Event": f"job.{job.status}",
        "AsyncJobs-Delivery": context.job_id,
        SIGNATURE_HEADER: sign(body),
    }
    response = send("POST", url, headers=headers, content=body)
    context.record_http_status(response.status_code)
    _classify(response, f"Webhook {url}")
    return {"status": response.status_code}
