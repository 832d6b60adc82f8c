"""The switch (``ASYNCJOBS["FAST_PATH"]``) and what every fast path shares: the per-alias
caches, dropped when settings change, and which psycopg Django's PostgreSQL backend runs on."""

from collections.abc import Hashable
from functools import cache
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from asyncjobs.conf import jobs_settings


def enabled() -> bool:
    """Whether the fast paths are on (``ASYNCJOBS["FAST_PATH"]``)."""
    return bool(jobs_settings.FAST_PATH)


# Every per-alias cache of asyncjobs.db, to be dropped together (see ``alias_cache``).
_ALIAS_CACHES: list[dict[Hashable, Any]] = []


def alias_cache() -> dict[Hashable, Any]:
    """A new dict for values computed once per database alias (statement texts, column
    plans), emptied whenever ``DATABASES`` or ``ASYNCJOBS`` change."""
    cached: dict[Hashable, Any] = {}
    _ALIAS_CACHES.append(cached)
    return cached


@receiver(setting_changed)
def _clear_alias_caches(*, setting: str, **kwargs: object) -> None:
    if setting in ("DATABASES", "ASYNCJOBS", "USE_TZ", "TIME_ZONE"):
        for cached in _ALIAS_CACHES:
            cached.clear()


@cache
def psycopg3() -> bool:
    """Whether Django's PostgreSQL backend runs on psycopg 3 (it takes psycopg 3 when it is
    installed, else psycopg2). Server-side binding, kept cursors, binary arrays, psycopg's
    own ``COPY`` and ``notifies`` are psycopg 3's; on psycopg2 the same statements run
    through Django's cursors, ``copy_expert`` and ``poll()``."""
    try:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3
    except ImportError:  # neither driver: there is no PostgreSQL connection to ask about
        return False
    return bool(is_psycopg3)
