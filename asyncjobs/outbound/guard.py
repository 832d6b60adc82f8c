"""The SSRF guard: which URLs and addresses may be called, and DNS resolution within the
call's deadline, so that a call connects to the very address that was checked."""

import contextlib
import ipaddress
import re
import socket
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit

from asyncjobs.conf import jobs_settings
from asyncjobs.outbound.base import Deadline, OutboundTimeoutError, OutboundURLRefusedError

DEFAULT_PORTS = {"http": 80, "https": 443}


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


def _getaddrinfo(host: str, port: int, deadline: Deadline) -> list[Any]:
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
    deadline = Deadline((timeout or jobs_settings.OUTBOUND_TIMEOUT).total_seconds())
    return resolve_within(host, port, deadline)


def resolve_within(host: str, port: int, deadline: Deadline) -> str:
    """``resolve`` within the deadline of a call under way (``send`` resolves each hop)."""
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
