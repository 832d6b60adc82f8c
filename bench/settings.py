"""Settings for the benchmark suite: PostgreSQL from DATABASE_URL (default a local
``asyncjobs_bench`` database), or SQLite with BENCH_SQLITE=1."""

import os
from pathlib import Path

from example_project.database import database_from_env

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "bench-only-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "asyncjobs"]

if not os.environ.get("BENCH_SQLITE"):
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/asyncjobs_bench")
else:
    os.environ.pop("DATABASE_URL", None)
DATABASES = {"default": database_from_env(BASE_DIR / "results" / "bench.sqlite3")}
DATABASES["default"]["CONN_MAX_AGE"] = None

TASKS = {"default": {"BACKEND": "asyncjobs.backend.JobsBackend", "QUEUES": ["default"]}}
ASYNCJOBS = {"POLL_INTERVAL": 1}
# bench/rate_limit.py: a queue under a rate limit, and one for its per-key runs, only in its
# own runs (a limited queue adds a claim under its lock to every round of a worker that
# serves it).
if os.environ.get("BENCH_RATE_LIMIT"):
    TASKS["default"]["QUEUES"] = ["default", "limited", "keyed"]
    ASYNCJOBS["QUEUES"] = {"limited": {"RATE_LIMIT": os.environ["BENCH_RATE_LIMIT"]}}
# Every system in the comparison logs at WARNING (Celery runs with --loglevel WARNING):
# Django's own django.tasks receivers would otherwise build two INFO records per job.
LOGGING = {
    "version": 1,
    "loggers": {"asyncjobs": {"level": "WARNING"}, "django.tasks": {"level": "WARNING"}},
}
