"""HTTP callback jobs: the ``call_url`` task, and its kwargs as the admin and the API show
them (credential headers redacted)."""

import json

from asyncjobs.conf import jobs_settings
from asyncjobs.outbound.base import TaskContext, internal_task
from asyncjobs.outbound.http import raise_for_status, redact_headers, send

CALL_URL_TASK = "asyncjobs.outbound.call_url"


@internal_task(takes_context=True)
def call_url(
    context: TaskContext,
    url: str,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    payload: object = None,
) -> dict[str, object]:
    """An HTTP callback job: send ``payload`` as JSON to ``url``.

    2xx succeeds (the status and the start of the body are the result, ``truncated`` when
    the body was longer than what is kept); 408, 425, 429, 5xx, timeouts and connection
    errors are retried; other 4xx fail at once. Every attempt records its HTTP status. A job
    asked to cancel sends nothing more and ends ``cancelled``.
    """
    context.raise_if_cancelled()
    content = None if payload is None else json.dumps(payload).encode()
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    response = send(
        method, url, headers=request_headers, content=content, cancel_event=context.cancel_event
    )
    context.record_http_status(response.status_code)
    raise_for_status(response, f"{method} {url}")
    text = response.text
    limit = jobs_settings.CALLBACK_RESPONSE_LIMIT
    return {
        "status": response.status_code,
        "body": text[:limit],
        "truncated": response.truncated or len(text) > limit,
    }


def redact_call(task_path: str, kwargs: object) -> object:
    """A job's kwargs for display: a callback job's credential headers redacted."""
    if task_path != CALL_URL_TASK or not isinstance(kwargs, dict):
        return kwargs
    headers = kwargs.get("headers")
    if not isinstance(headers, dict):
        return kwargs
    return {**kwargs, "headers": redact_headers(headers)}
