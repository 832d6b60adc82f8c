"""The bounded HTTP client: every request asyncjobs makes goes through ``send()``, under one
deadline and a byte cap, to an address the guard checked, redirects followed by hand."""

import codecs
import contextlib
import dataclasses
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, urljoin, urlunsplit

import httpcore

from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import JobCancelled, Retry
from asyncjobs.outbound.base import (
    Deadline,
    InvalidHeaderError,
    OutboundConnectionError,
    OutboundTimeoutError,
    OutboundURLRefusedError,
    PermanentHTTPError,
    RetryableHTTPError,
)
from asyncjobs.outbound.guard import DEFAULT_PORTS, check_url, resolve_within

RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


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


# --- Sending -----------------------------------------------------------------------------


class _Stream(httpcore.NetworkStream):
    """A socket whose every operation waits for the time left before the deadline at most.

    Reads wake up every ``CANCEL_POLL`` seconds to see whether the job was asked to cancel.
    CPython bounds a TLS handshake as a whole by the socket timeout; writes go in slices,
    each with what is left.
    """

    def __init__(
        self, sock: socket.socket, deadline: Deadline, cancelled: Callable[[], bool]
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

    def __init__(self, deadline: Deadline, cancelled: Callable[[], bool]) -> None:
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
    deadline = Deadline((timeout or jobs_settings.OUTBOUND_TIMEOUT).total_seconds())
    cancelled = cancel_event.is_set if cancel_event is not None else (lambda: False)
    cap = int(jobs_settings.OUTBOUND_MAX_RESPONSE_BYTES)
    sent = {"User-Agent": "asyncjobs", **(headers or {}), "Accept-Encoding": "identity"}
    for _ in range(jobs_settings.OUTBOUND_MAX_REDIRECTS + 1):
        if cancelled():
            raise JobCancelled("The job was cancelled before its request.")
        parts = check_url(url)
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        address = resolve_within(parts.hostname or "", port, deadline)
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


def raise_for_status(response: OutboundResponse, what: str) -> None:
    """Raise for a non-2xx response: ``Retry`` (after the ``Retry-After`` seconds, at most an
    hour) or ``RetryableHTTPError`` for 408, 425, 429 and 5xx, else ``PermanentHTTPError``."""
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
