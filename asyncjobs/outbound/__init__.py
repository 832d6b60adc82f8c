"""Outbound HTTP: the callback jobs and completion webhooks asyncjobs sends itself.

Every request goes through ``send()``, which refuses what it must not call and bounds what
it does call:

- the URL must be http(s), with a valid port, and match ``OUTBOUND_ALLOWED_URLS``;
- the host is resolved once and every address must be public unicast, unless it lies in
  ``OUTBOUND_ALLOWED_NETWORKS``. The refused ranges are listed here, not left to
  ``ipaddress.is_global`` (which has changed between Python patch releases): loopback,
  private, link-local (cloud metadata), shared, documentation, reserved and multicast
  addresses, and the IPv6 transition and deprecated forms (IPv4-compatible, NAT64, 6to4,
  Teredo, site-local). An IPv4-mapped IPv6 address is judged as the IPv4 address it holds;
- the connection goes to the address that was checked (the hostname travels in ``Host`` and
  TLS SNI), so DNS cannot answer differently between the check and the call;
- one deadline, ``OUTBOUND_TIMEOUT``, covers the whole call: DNS, connect, TLS, sending,
  the response's headers and body, and every redirect. Each socket operation may block for
  the time left at most, so a receiver that drips one byte at a time is cut off on time;
- the response body is streamed, never decoded (``Accept-Encoding: identity``), and reading
  stops after ``OUTBOUND_MAX_RESPONSE_BYTES``: the rest is never read;
- redirects are followed by hand, each location checked the same way. Like a browser's
  fetch, a redirect to another origin (scheme, host, port) drops every header the caller
  set except ``Content-Type`` (so ``Authorization``, ``Cookie`` and custom headers never
  reach it), and 301/302 after POST and 303 turn into a GET without a body, while 307/308
  keep the method and body;
- a callback job asked to cancel stops reading within half a second and sends nothing more.

Webhooks are signed: ``AsyncJobs-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` with the first of the ``WEBHOOK_SECRET`` keys; receivers check it with
``verify_signature()``, which accepts any of several keys (rotation).

One module per part, lower ones first (import-linter holds the order): ``base`` (errors,
the deadline), ``guard`` (URLs, addresses, DNS), ``http`` (``send``, headers),
``webhooks`` and ``callbacks`` (the two tasks). Every name is re-exported here.
"""

from asyncjobs.outbound.base import (
    Deadline,
    InvalidHeaderError,
    OutboundConnectionError,
    OutboundTimeoutError,
    OutboundURLRefusedError,
    PermanentHTTPError,
    RetryableHTTPError,
    WebhookSignatureError,
    internal_task,
)
from asyncjobs.outbound.callbacks import CALL_URL_TASK, call_url, redact_call
from asyncjobs.outbound.guard import (
    DEFAULT_PORTS,
    GLOBAL_UNICAST_IPV6,
    REFUSED_IPV4,
    REFUSED_IPV6,
    _address_allowed,
    address_refusal,
    check_url,
    resolve,
    resolve_within,
    validate_url,
)
from asyncjobs.outbound.http import (
    CANCEL_POLL,
    CREDENTIAL_HEADER,
    CROSS_ORIGIN_HEADERS,
    FORBIDDEN_HEADERS,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    REDACTED,
    RETRYABLE_STATUSES,
    OutboundResponse,
    check_headers,
    raise_for_status,
    redact_headers,
    send,
)
from asyncjobs.outbound.webhooks import (
    SIGNATURE_HEADER,
    _secret,
    _secrets,
    batch_webhook_payload,
    deliver_batch_webhook,
    deliver_webhook,
    sign,
    verify_signature,
    webhook_payload,
)

# Stored rows name these by their dotted path: the two tasks as ``task_path``, the errors in
# ``fail_on`` and as an attempt's ``error_class``. Their path stays ``asyncjobs.outbound.X``
# whichever module defines them.
for _public in (
    InvalidHeaderError,
    OutboundConnectionError,
    OutboundTimeoutError,
    OutboundURLRefusedError,
    PermanentHTTPError,
    RetryableHTTPError,
    WebhookSignatureError,
    call_url,
    deliver_batch_webhook,
    deliver_webhook,
):
    _public.__module__ = __name__
del _public

__all__ = [
    "CALL_URL_TASK",
    "CANCEL_POLL",
    "CREDENTIAL_HEADER",
    "CROSS_ORIGIN_HEADERS",
    "DEFAULT_PORTS",
    "FORBIDDEN_HEADERS",
    "GLOBAL_UNICAST_IPV6",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE",
    "REDACTED",
    "REFUSED_IPV4",
    "REFUSED_IPV6",
    "RETRYABLE_STATUSES",
    "SIGNATURE_HEADER",
    "Deadline",
    "InvalidHeaderError",
    "OutboundConnectionError",
    "OutboundResponse",
    "OutboundTimeoutError",
    "OutboundURLRefusedError",
    "PermanentHTTPError",
    "RetryableHTTPError",
    "WebhookSignatureError",
    "_address_allowed",
    "_secret",
    "_secrets",
    "address_refusal",
    "batch_webhook_payload",
    "call_url",
    "check_headers",
    "check_url",
    "deliver_batch_webhook",
    "deliver_webhook",
    "internal_task",
    "raise_for_status",
    "redact_call",
    "redact_headers",
    "resolve",
    "resolve_within",
    "send",
    "sign",
    "validate_url",
    "verify_signature",
    "webhook_payload",
]
