"""Settings for the chaos run: PostgreSQL from DATABASE_URL (default a local
``asyncjobs_chaos`` database, recreated on every run). Short leases and heartbeats so that
killed workers' jobs come back within seconds."""

import os
from pathlib import Path

from example_project.database import database_from_env

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "chaos-only-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "asyncjobs"]

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_chaos")
DATABASES = {"default": database_from_env(BASE_DIR / "chaos.sqlite3")}
if os.environ.get("ASYNCJOBS_CHAOS_POOLER"):  # workers behind PgBouncer (chaos.sh --pooled)
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

TASKS = {"default": {"BACKEND": "asyncjobs.backend.JobsBackend", "QUEUES": ["default"]}}
ASYNCJOBS = {
    "LEASE_DURATION": 4,
    "HEARTBEAT_INTERVAL": 1,
    "MAINTENANCE_INTERVAL": 1,
    "POLL_INTERVAL": 0.5,
    "SHUTDOWN_TIMEOUT": 5,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"asyncjobs": {"handlers": ["console"], "level": "WARNING"}},
}
