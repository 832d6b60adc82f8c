"""Shared settings of the peers' Django projects (PostgreSQL from PEER_DATABASE_URL)."""

import os

from example_project.database import database_from_env

SECRET_KEY = "bench-peers-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# WARNING for every system, as bench/settings.py (Django's "django" logger is INFO by default).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
    "loggers": {"django.tasks": {"level": "WARNING"}},
}


def database(name: str) -> dict:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
    db = database_from_env(None)  # type: ignore[arg-type]
    db["CONN_MAX_AGE"] = None
    return db
