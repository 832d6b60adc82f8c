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
"""

import codecs
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpcore

from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import AsyncJobsError, ConfigurationError, JobCancelled, Retry

SIGNATURE_HEADER = "AsyncJobs-Signature"
RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
DEFAULT_PORTS = {"http": 80, "https": 443}
# How often a blocked read looks whether its job was asked to cancel (seconds).
CANCEL_POLL = 0.5
# Headers that reach another origin after a redirect (when the body goes along, for
# Content-Type); every other header the caller set is dropped, as a browser's fetch drops
# Authorization and never sends one origin's cookies to another.
CROSS_ORIGIN_HEADERS = frozenset({"user-agent", "accept", "accept-encoding"})
# Header names whose values are shown as "[redacted]" in the admin and the API.
CREDENTIAL_HEADER = re.compile(
    r"authorization|proxy-authorization|cookie|.*(token|secret|key|password|passwd|auth|"
    r"session|signature|credential).*",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
# RFC 9110 token: the characters a header name may hold.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers a caller may not set: they belong to the connection or to the request framing.
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "accept-encoding",
    }
)
MAX_HEADERS = 50
MAX_HEADER_VALUE = 4096


class OutboundURLRefusedError(AsyncJobsError, ValueError):
    """Raised when a callback or webhook URL is not allowed: not http(s), a bad port, not on
    the allow-list, or resolving to an address that is not public. Never retried."""


class InvalidHeaderError(AsyncJobsError, ValueError):
    """Raised (by ``check_headers``, at enqueue) for request headers that cannot be sent: a
    name that is not an HTTP token, a reserved name, or a value with control characters or
    characters outside ISO-8859-1."""


class OutboundTimeoutError(AsyncJobsError, TimeoutError):
    """Raised when an outbound request (DNS, connect, TLS, request, response headers and
    body, redirects) does not finish within its deadline, ``OUTBOUND_TIMEOUT``. Retried."""


class OutboundConnectionError(AsyncJobsError, ConnectionError):
    """Raised when an outbound request fails on the network or in the protocol: refused or
    reset connection, TLS failure, a malformed or oversized response head. Retried."""


class PermanentHTTPError(AsyncJobsError):
    """Raised when a callback or webhook answers a 4xx status that retrying will not fix.
    The job fails at once. ``http_status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class RetryableHTTPError(AsyncJobsError):
    """Raised when a callback or webhook answers 408, 425, 429 or 5xx: retried with the job's
    backoff. ``http_status`` is the HTTP status."""

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


def check_url(url: str) -> SplitResult:
    """Parse ``url`` and check its scheme, port and the allow-list (no DNS). Returns the
    parts, the host name in its ASCII (IDNA) form.

    Raises ``OutboundURLRefusedError``.
    """
    if not isinstance(url, str) or len(url) > 2000:
        raise OutboundURLRefusedError("The URL must be a string of at most 2000 characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port outside 0-65535, or a malformed IPv6 literal
        raise OutboundURLRefusedError(f"{url!r} is not a valid URL: {exc}.") from exc
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise OutboundURLRefusedError(f"Only absolute http(s) URLs can be called, not {url!r}.")
    if parts.username is not None or parts.password is not None:
        raise OutboundURLRefusedError("URLs with credentials are refused; use headers.")
    if port == 0:
        raise OutboundURLRefusedError(f"{url!r} has port 0, which cannot be called.")
    patterns = jobs_settings.OUTBOUND_ALLOWED_URLS
    if not any(re.match(pattern, url) for pattern in patterns):
        raise OutboundURLRefusedError(
            f"{url!r} is not allowed by ASYNCJOBS['OUTBOUND_ALLOWED_URLS']."
        )
    host = parts.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise OutboundURLRefusedError(f"{parts.hostname!r} is not a valid host name.") from exc
        literal = f"[{host}]" if ":" in host else host
        parts = parts._replace(netloc=literal if port is None else f"{literal}:{port}")
    return parts


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Special-purpose IPv4 blocks (IANA registry) that are not reachable on the internet.
REFUSED_IPV4 = _networks(
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)
# IPv6 is only called in global unicast space (2000::/3), outside these blocks.
GLOBAL_UNICAST_IPV6 = ipaddress.ip_network("2000::/3")
REFUSED_IPV6 = _networks(
    "::/96",  # IPv4-compatible (deprecated), with :: and ::1
    "::ffff:0:0/96",  # IPv4-mapped (judged as the IPv4 address instead)
    "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
    "64:ff9b::/96",  # NAT64, well-known prefix
    "64:ff9b:1::/48",  # NAT64, local use
    "100::/64",  # discard
    "2001::/23",  # IETF protocol assignments: Teredo (2001::/32), ORCHID, benchmarking
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "3fff::/20",  # documentation
    "5f00::/16",  # SRv6 SIDs
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)


# IPv4-compatible, IPv4-translated and NAT64 (well-known prefix) addresses end with the
# IPv4 address.
_IPV4_IN_LAST_32_BITS = _networks("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition address carries, for error messages."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _IPV4_IN_LAST_32_BITS) and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str) -> str | None:
    """Why ``address`` (an IP address as ``getaddrinfo`` gives it) may not be called, or
    None if it may: it is public unicast, or lies in ``OUTBOUND_ALLOWED_NETWORKS``."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in jobs_settings.OUTBOUND_ALLOWED_NETWORKS:
        if ip in ipaddress.ip_network(network, strict=False):
            return None
    if isinstance(ip, ipaddress.IPv4Address):
        refused = next((net for net in REFUSED_IPV4 if ip in net), None)
        if refused is not None:
            return f"{ip} is in {refused}"
    else:
        refused = next((net for net in REFUSED_IPV6 if ip in net), None)
        if refused is not None:
            embedded = _embedded_ipv4(ip)
            return f"{ip} is in {refused}" + (f" (it carries {embedded})" if embedded else "")
        if ip not in GLOBAL_UNICAST_IPV6:
            return f"{ip} is not global unicast (2000::/3)"
    # Belt and braces: whatever this Python's registry knows not to be global stays refused.
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is not a global address"
    return None


def _address_allowed(address: str) -> bool:
    return address_refusal(address) is None


class _Deadline:
    """The monotonic time by which an outbound call must be done."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (> 0); raises ``OutboundTimeoutError`` once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise OutboundTimeoutError(f"The request did not finish within {self.seconds:g} s.")
        return left


def _getaddrinfo(host: str, port: int, deadline: _Deadline) -> list[Any]:
    """``socket.getaddrinfo`` within the deadline. The system resolver cannot be
    interrupted, so it runs in a daemon thread that is abandoned (and ends on its own) if
    the deadline passes first."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address literal: nothing to look up, no thread needed
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    box: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=lookup, name="asyncjobs-resolve", daemon=True).start()
    if not done.wait(deadline.left()):
        raise OutboundTimeoutError(f"Resolving {host} took more than {deadline.seconds:g} s.")
    if "error" in box:
        error = box["error"]
        if isinstance(error, UnicodeError):
            raise OutboundURLRefusedError(f"{host!r} is not a valid host name.") from error
        raise error
    return list(box["infos"])


def resolve(host: str, port: int, *, timeout: timedelta | None = None) -> str:
    """The address to connect to for ``host``: every address it resolves to must be
    allowed. Raises ``OutboundURLRefusedError``; DNS failures raise ``OSError`` and a
    resolver slower than ``timeout`` (default ``OUTBOUND_TIMEOUT``) ``OutboundTimeoutError``,
    both retried."""
    deadline = _Deadline((timeout or jobs_settings.OUTBOUND_TIMEOUT).total_seconds())
    return _resolve(host, port, deadline)


def _resolve(host: str, port: int, deadline: _Deadline) -> str:
    infos = _getaddrinfo(host, port, deadline)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refusals = [reason for reason in map(address_refusal, addresses) if reason]
    if refusals or not addresses:
        raise OutboundURLRefusedError(
            f"{host} resolves to an address that may not be called: "
            f"{'; '.join(refusals) or 'none'} (see ASYNCJOBS['OUTBOUND_ALLOWED_NETWORKS'])."
        )
    ip = ipaddress.ip_address(addresses[0].split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # connect over IPv4, to the address that was judged
    return addresses[0]


def validate_url(url: str) -> None:
    """Everything ``send`` checks, for use at enqueue: raises ``OutboundURLRefusedError``."""
    parts = check_url(url)
    # A DNS failure or a slow resolver is not a refusal: the name may resolve by the time
    # the job runs, and send() checks again then.
    with contextlib.suppress(OSError, OutboundTimeoutError):
        resolve(parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme])


def check_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """``headers`` if a callback may send them, else ``InvalidHeaderError`` naming the bad
    ones: names must be HTTP tokens (no ``:``, spaces or non-ASCII) and not reserved for the
    connection (``Host``, ``Content-Length``, ...); values strings of ISO-8859-1 without
    control characters or surrounding spaces, at most 4096 characters. At most 50."""
    if not isinstance(headers, Mapping):
        raise InvalidHeaderError("Headers must be an object of names to values.")
    if len(headers) > MAX_HEADERS:
        raise InvalidHeaderError(f"At most {MAX_HEADERS} headers.")
    bad_names = sorted(
        repr(name)
        for name in headers
        if not isinstance(name, str)
        or not _HEADER_NAME.fullmatch(name)
        or name.lower() in FORBIDDEN_HEADERS
    )
    if bad_names:
        raise InvalidHeaderError(
            f"These headers cannot be set: {', '.join(bad_names)} (names must be HTTP "
            "tokens, and connection headers are set by asyncjobs)."
        )
    bad_values = sorted(
        name
        for name, value in headers.items()
        if not isinstance(value, str)
        or len(value) > MAX_HEADER_VALUE
        or value != value.strip(" \t")
        or not all(ch == "\t" or " " <= ch <= "~" or "\xa0" <= ch <= "\xff" for ch in value)
    )
    if bad_values:
        raise InvalidHeaderError(
            "These header values are not strings of at most 4096 ISO-8859-1 characters "
            f"without control characters or surrounding spaces: {', '.join(bad_values)}."
        )
    return dict(headers)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` with the values of credential headers (``Authorization``, ``Cookie``,
    names holding token, secret, key, password, auth, session, signature or credential)
    replaced by ``"[redacted]"``, for display."""
    return {
        name: REDACTED if CREDENTIAL_HEADER.fullmatch(str(name)) else value
        for name, value in headers.items()
    }


def redact_call(task_path: str, kwargs: Any) -> Any:
    """A job's kwargs for display: a callback job's credential headers redacted."""
    if task_path != CALL_URL_TASK or not isinstance(kwargs, dict):
        return kwargs
    headers = kwargs.get("headers")
    if not isinstance(headers, dict):
        return kwargs
    return {**kwargs, "headers": redact_headers(headers)}


# --- Sending -----------------------------------------------------------------------------


class _Stream(httpcore.NetworkStream):
    """A socket whose every operation waits for the time left before the deadline at most.

    Reads wake up every ``CANCEL_POLL`` seconds to see whether the job was asked to cancel.
    CPython bounds a TLS handshake as a whole by the socket timeout; writes go in slices,
    each with what is left.
    """

    def __init__(
        self, sock: socket.socket, deadline: _Deadline, cancelled: Callable[[], bool]
    ) -> None:
        self._sock = sock
        self._deadline = deadline
        self._cancelled = cancelled

    def _left(self, error: type[Exception]) -> float:
        try:
            return self._deadline.left()
        except OutboundTimeoutError as exc:
            raise error(str(exc)) from None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        while not self._cancelled():
            left = self._left(httpcore.ReadTimeout)
            try:
                self._sock.settimeout(min(left, CANCEL_POLL))
                return self._sock.recv(max_bytes)
            except TimeoutError:
                continue  # look at the cancel request and the deadline again
            except OSError as exc:
                raise httpcore.ReadError(str(exc)) from exc
        raise JobCancelled("The job was cancelled during its request.")

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            if self._cancelled():
                raise JobCancelled("The job was cancelled during its request.")
            left = self._left(httpcore.WriteTimeout)
            try:
                self._sock.settimeout(left)
                sent = self._sock.send(view[:65536])
            except TimeoutError:
                continue  # the deadline check above ends it
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc
            view = view[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> "_Stream":
        try:
            self._sock.settimeout(self._left(httpcore.ConnectTimeout))
            sock = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except TimeoutError:
            self._sock.close()
            raise httpcore.ConnectTimeout("The TLS handshake did not finish in time.") from None
        except OSError as exc:  # ssl.SSLError included
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _Stream(sock, self._deadline, self._cancelled)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "socket":
            return self._sock
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "client_addr":
            return self._sock.getsockname()
        return None


class _Backend(httpcore.NetworkBackend):
    """httpcore's network I/O for one ``send()``: its sockets share one deadline."""

    def __init__(self, deadline: _Deadline, cancelled: Callable[[], bool]) -> None:
        self._deadline = deadline
        self._cancelled = cancelled

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _Stream:
        try:
            left = self._deadline.left()
        except OutboundTimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        try:
            sock = socket.create_connection((host, port), left)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"Connecting to {host} timed out.") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Stream(sock, self._deadline, self._cancelled)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> _Stream:
        raise httpcore.ConnectError("Unix sockets are not used.")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._deadline.left()))


@dataclass(frozen=True)
class OutboundResponse:
    """The answer to ``send()``: the status, the headers (lowercase names) and the start of
    the body, at most ``OUTBOUND_MAX_RESPONSE_BYTES``; ``truncated`` if there was more."""

    status_code: int
    headers: dict[str, str]
    content: bytes
    truncated: bool
    url: str

    @property
    def text(self) -> str:
        """The body read, decoded with the charset of its ``Content-Type`` (UTF-8 if none or
        unknown); undecodable bytes, and a character cut at the cap, become U+FFFD."""
        match = re.search(r"charset=\"?([\w.:-]+)", self.headers.get("content-type", ""), re.I)
        encoding = "utf-8"
        if match:
            with contextlib.suppress(LookupError):
                encoding = codecs.lookup(match[1]).name
        return self.content.decode(encoding, errors="replace")


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS[parts.scheme])


def _header_map(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    timeout: timedelta | None = None,
    cancel_event: threading.Event | None = None,
) -> OutboundResponse:
    """Make one request with the checks and bounds of the module docstring.

    Parameters:
        method: the HTTP method.
        url: the URL, checked (and each redirect's) against the allow-lists.
        headers: request headers (see ``check_headers``).
        content: the request body.
        timeout: the deadline of the whole call, redirects included (default
            ``OUTBOUND_TIMEOUT``).
        cancel_event: when set, the call stops and raises ``JobCancelled``.

    Raises ``OutboundURLRefusedError``, ``OutboundTimeoutError``, ``OutboundConnectionError``
    (DNS failures: ``OSError``) or ``JobCancelled``.
    """
    deadline = _Deadline((timeout or jobs_settings.OUTBOUND_TIMEOUT).total_seconds())
    cancelled = cancel_event.is_set if cancel_event is not None else (lambda: False)
    cap = int(jobs_settings.OUTBOUND_MAX_RESPONSE_BYTES)
    sent = {"User-Agent": "asyncjobs", **(headers or {}), "Accept-Encoding": "identity"}
    for _ in range(jobs_settings.OUTBOUND_MAX_REDIRECTS + 1):
        if cancelled():
            raise JobCancelled("The job was cancelled before its request.")
        parts = check_url(url)
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        address = _resolve(parts.hostname or "", port, deadline)
        literal = f"[{address}]" if ":" in address else address
        target = urlunsplit(parts._replace(netloc=f"{literal}:{port}", fragment=""))
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        # A pool per call, never keeping a connection: each goes to an address checked
        # for this very request and lives under its deadline.
        with httpcore.ConnectionPool(
            network_backend=_Backend(deadline, cancelled), max_keepalive_connections=0
        ) as pool:
            try:
                response = _exchange(pool, method, target, parts, sent, content, extensions, cap)
            except httpcore.TimeoutException as exc:
                raise OutboundTimeoutError(
                    f"{method} {url} did not finish within {deadline.seconds:g} s."
                ) from exc
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                raise OutboundConnectionError(
                    f"{method} {url}: {exc or type(exc).__name__}"
                ) from exc
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            return dataclasses.replace(response, url=url)
        next_url = urljoin(url, location)
        next_parts = check_url(next_url)
        if (response.status_code == 303 and method != "HEAD") or (
            response.status_code in (301, 302) and method == "POST"
        ):
            method, content = "GET", None
            sent = {k: v for k, v in sent.items() if k.lower() != "content-type"}
        if _origin(next_parts) != _origin(parts):
            keep = CROSS_ORIGIN_HEADERS | ({"content-type"} if content is not None else set())
            sent = {k: v for k, v in sent.items() if k.lower() in keep}
        url = next_url
    limit = jobs_settings.OUTBOUND_MAX_REDIRECTS
    raise OutboundURLRefusedError(f"More than {limit} redirects.")


def _exchange(
    pool: httpcore.ConnectionPool,
    method: str,
    target: str,
    parts: SplitResult,
    headers: Mapping[str, str],
    content: bytes | None,
    extensions: dict[str, Any],
    cap: int,
) -> OutboundResponse:
    """One request and the first ``cap`` bytes of its response's body."""
    request_headers = [("Host", parts.netloc), *headers.items()]
    with pool.stream(
        method, target, headers=request_headers, content=content, extensions=extensions
    ) as response:
        chunks: list[bytes] = []
        size, truncated = 0, False
        for chunk in response.iter_stream():
            chunks.append(chunk[: max(cap - size, 0)])
            size += len(chunk)
            if size > cap:
                # Stop here: closing the response closes the connection, the rest unread.
                truncated = True
                break
        return OutboundResponse(
            status_code=response.status,
            headers=_header_map(response.headers),
            content=b"".join(chunks),
            truncated=truncated,
            url=target,
        )


def _classify(response: OutboundResponse, what: str) -> None:
    """Raise for a non-2xx response: retryable or permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{what} answered HTTP {status}"
    if status in RETRYABLE_STATUSES:
        retry_after = response.headers.get("retry-after", "").strip()
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if re.fullmatch(r"[0-9]{1,9}", retry_after):
            raise Retry(delay=timedelta(seconds=min(int(retry_after), 3600)), reason=message)
        raise RetryableHTTPError(status, message)
    raise PermanentHTTPError(status, message)


# --- Signatures --------------------------------------------------------------------------


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


# --- The tasks ---------------------------------------------------------------------------

CALL_URL_TASK = "asyncjobs.outbound.call_url"


@internal_task(takes_context=True)
def call_url(
    context: Any,
    url: str,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    payload: Any = None,
) -> dict[str, Any]:
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
    _classify(response, f"{method} {url}")
    text = response.text
    limit = jobs_settings.CALLBACK_RESPONSE_LIMIT
    return {
        "status": response.status_code,
        "body": text[:limit],
        "truncated": response.truncated or len(text) > limit,
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

    context.raise_if_cancelled()
    job = Job.objects.using(context.database).get(pk=job_id)
    body = json.dumps(webhook_payload(job), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "asyncjobs-webhook",
        "AsyncJobs-Event": f"job.{job.status}",
        "AsyncJobs-Delivery": context.job_id,
        SIGNATURE_HEADER: sign(body),
    }
    response = send("POST", url, headers=headers, content=body, cancel_event=context.cancel_event)
    context.record_http_status(response.status_code)
    _classify(response, f"Webhook {url}")
    return {"status": response.status_code}
