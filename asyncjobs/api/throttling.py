"""Rate limits of the client API, and the cap on open event streams.

Both keep their counts in Django's default cache, as DRF's own throttles do: with a cache
shared by every web process (Redis, Memcached, the database cache) they hold for the whole
site; with the per-process ``LocMemCache`` they hold per process.

Rates come from ``ASYNCJOBS["API_THROTTLE_RATES"]`` (``{"create": "60/min", "events":
"60/min"}`` by default; DRF's ``N/s``, ``N/min``, ``N/hour``, ``N/day``); a key set to None,
or the setting set to None, turns that limit off. The caller is the signed-in user, else the
client address as DRF's ``NUM_PROXIES`` setting reads it.
"""

import uuid
from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from asyncjobs.conf import DEFAULTS, jobs_settings

# How long a stream's slot lives without being refreshed: a process that dies with streams
# open gives their slots back within this time.
SLOT_TTL = 60
# How often an open stream refreshes its slot (well within SLOT_TTL).
SLOT_REFRESH = 15


def caller(request: Request) -> str:
    """Who is asking: ``user:<pk>`` when signed in, else ``addr:<client address>``."""
    user = request.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"addr:{BaseThrottle().get_ident(request)}"


def configured_rate(name: str) -> str | None:
    """The rate of limit ``name`` (``"create"``, ``"events"``): the project's, else the
    default; None when turned off."""
    rates = jobs_settings.API_THROTTLE_RATES
    if rates is None:
        return None
    defaults: dict[str, str | None] = DEFAULTS["API_THROTTLE_RATES"]
    return rates[name] if name in rates else defaults.get(name)


class _SettingRateThrottle(SimpleRateThrottle):
    """A ``SimpleRateThrottle`` whose rate is read from ``API_THROTTLE_RATES``."""

    limit_name = ""

    def get_rate(self) -> str | None:
        return configured_rate(self.limit_name)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": caller(request)}


class CreateJobThrottle(_SettingRateThrottle):
    """``POST /jobs/``: ``API_THROTTLE_RATES["create"]`` per caller (default 60/min)."""

    scope = "asyncjobs.create"
    limit_name = "create"

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


class EventsThrottle(_SettingRateThrottle):
    """Opening ``GET /jobs/<id>/events/``: ``API_THROTTLE_RATES["events"]`` per caller
    (default 60/min). ``EventSource`` reconnects by itself; this bounds how often."""

    scope = "asyncjobs.events"
    limit_name = "events"


class StreamSlot:
    """One of a caller's ``API_EVENTS_MAX_STREAMS`` concurrent event streams.

    The slots of a caller are cache keys ``asyncjobs:sse:<caller>:<n>``; ``acquire`` takes
    the first free one with the cache's atomic ``add``, so concurrent requests cannot share
    a slot. The stream gives it back when it ends (the job ended, the maximum duration, or
    the client went away: the server closes the response). A slot expires ``SLOT_TTL``
    seconds after the stream last refreshed it, so a process that died with streams open
    does not lock their caller out for long.
    """

    def __init__(self, key: str, token: str) -> None:
        self.key = key
        self.token = token
        self.released = False

    @classmethod
    def acquire(cls, request: Request) -> "StreamSlot | None":
        """A free slot for the request's caller, or None when all are taken. With
        ``API_EVENTS_MAX_STREAMS`` None there is no cap: a slot that holds nothing."""
        limit = jobs_settings.API_EVENTS_MAX_STREAMS
        token = uuid.uuid4().hex
        if limit is None:
            return cls("", token)
        who = caller(request)
        for n in range(int(limit)):
            key = f"asyncjobs:sse:{who}:{n}"
            if cache.add(key, token, timeout=SLOT_TTL):
                return cls(key, token)
        return None

    def refresh(self) -> None:
        """Keep the slot while the stream is open."""
        if self.key and not self.released:
            cache.touch(self.key, timeout=SLOT_TTL)

    def release(self) -> None:
        """Give the slot back (once; a slot that expired and was taken by another stream
        is left to that stream)."""
        if self.released:
            return
        self.released = True
        if self.key and cache.get(self.key) == self.token:
            cache.delete(self.key)
