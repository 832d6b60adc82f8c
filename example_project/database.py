"""DATABASES from the environment: ``DATABASE_URL`` (postgres://user:pass@host:port/name)
selects PostgreSQL; without it, SQLite in a file (WAL, IMMEDIATE transactions)."""

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def database_from_env(sqlite_path: Path) -> dict[str, Any]:
    """The ``default`` database settings; ``ASYNCJOBS_DB_NAME`` overrides the name (tests
    point worker subprocesses at the test database with it)."""
    url = os.environ.get("DATABASE_URL", "")
    name_override = os.environ.get("ASYNCJOBS_DB_NAME")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql"}:
            raise ValueError(f"DATABASE_URL must be postgres://..., got {parts.scheme}://")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name_override or unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name_override or str(sqlite_path),
        "OPTIONS": {
            # Writers take the lock up front instead of failing on upgrade; wait for it.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(sqlite_path.with_name(sqlite_path.stem + "_test.sqlite3"))},
    }
