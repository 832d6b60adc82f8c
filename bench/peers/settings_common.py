"""Shared settings of the peers' Django projects: their databases are on the server
BENCH_SERVER_URL names (bench/peers/run_peer.py sets it; default the local PostgreSQL)."""

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
    server = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
    os.environ["DATABASE_URL"] = f"{server}/{name}{os.environ.get('BENCH_DB_SUFFIX', '')}"
    db = database_from_env(None)  # type: ignore[arg-type]
    db["CONN_MAX_AGE"] = None
    return db
