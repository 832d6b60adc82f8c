"""Settings for the test suite. ``DATABASE_URL`` selects PostgreSQL; default SQLite."""

import os
from datetime import timedelta
from pathlib import Path

from example_project.database import database_from_env

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "asyncjobs",
    "tests",
]

_db_dir = Path(os.environ.get("ASYNCJOBS_TEST_DIR", BASE_DIR.parent / ".test-data"))
_db_dir.mkdir(exist_ok=True)
DATABASES = {"default": database_from_env(_db_dir / "tests.sqlite3")}

TASKS = {
    "default": {
        "BACKEND": "asyncjobs.backend.JobsBackend",
        "QUEUES": ["default", "emails", "low", "other"],
    },
}


def _seconds(name: str, default: float) -> timedelta:
    return timedelta(seconds=float(os.environ.get(name, default)))


# Worker subprocesses started by the tests read their timings from the environment.
ASYNCJOBS = {
    "BACKOFF": None,
    "LEASE_DURATION": _seconds("ASYNCJOBS_TEST_LEASE", 60),
    "HEARTBEAT_INTERVAL": _seconds("ASYNCJOBS_TEST_HEARTBEAT", 10),
    "MAINTENANCE_INTERVAL": _seconds("ASYNCJOBS_TEST_MAINTENANCE", 15),
    "POLL_INTERVAL": _seconds("ASYNCJOBS_TEST_POLL", 1),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "asyncjobs": {"handlers": ["stderr"], "level": os.environ.get("ASYNCJOBS_LOG", "INFO")}
    },
}
