"""DATABASES from the environment: ``DATABASE_URL`` selects PostgreSQL
(postgres://user:pass@host:port/name) or MariaDB/MySQL (mysql://... or mariadb://...);
without it, SQLite in a file (WAL, IMMEDIATE transactions)."""

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

POSTGRES_SCHEMES = {"postgres", "postgresql"}
MYSQL_SCHEMES = {"mysql", "mariadb"}


def database_from_env(sqlite_path: Path) -> dict[str, Any]:
    """The ``default`` database settings; ``ASYNCJOBS_DB_NAME`` overrides the name (tests
    point worker subprocesses at the test database with it)."""
    url = os.environ.get("DATABASE_URL", "")
    name_override = os.environ.get("ASYNCJOBS_DB_NAME")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in POSTGRES_SCHEMES | MYSQL_SCHEMES:
            raise ValueError(
                f"DATABASE_URL must be postgres://... or mysql://..., got {parts.scheme}://"
            )
        name = unquote(parts.path.lstrip("/"))
        settings: dict[str, Any] = {
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
        if parts.scheme in POSTGRES_SCHEMES:
            return {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": name_override or name or "postgres",
                **settings,
            }
        name = name or "asyncjobs"
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": name_override or name,
            **settings,
            "OPTIONS": {
                # utf8mb4: any text a task returns or raises (emoji included) is stored.
                "charset": "utf8mb4",
                # Django's default for MySQL, stated: under REPEATABLE READ (InnoDB's own
                # default) a claim's SELECT ... FOR UPDATE SKIP LOCKED would also take gap
                # locks on the index range it scans, blocking enqueues into that range and
                # deadlocking claims; READ COMMITTED locks only the rows it picks.
                "isolation_level": "read committed",
            },
            # A binary collation, so that unique keys, queue names and task paths compare
            # exactly as on PostgreSQL and SQLite ("Key" and "key" are two keys).
            "TEST": {"NAME": f"{name}_test", "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"},
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
