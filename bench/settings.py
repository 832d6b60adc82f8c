"""Settings for the benchmark suite: PostgreSQL or MariaDB/MySQL from DATABASE_URL (default a
local ``asyncjobs_bench`` PostgreSQL database), or SQLite with BENCH_SQLITE=1.

bench/compare.py sets more: BENCH_POLL_INTERVAL (seconds; else 1 s), and behind PgBouncer in
transaction mode BENCH_DIRECT_PORT (the server's own port, for the workers' LISTEN when
BENCH_LISTEN_DIRECT is set; without it they poll)."""

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
if app_name := os.environ.get("BENCH_APP_NAME"):
    # bench/cpu_meter.py tells the backends serving workers from the clients' by this name.
    DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = app_name
if pool := os.environ.get("BENCH_DB_POOL"):
    # Django's psycopg pool for every thread (bench/io_bound.py's asyncjobs-pool): its
    # connections go back to the pool when a thread closes them, which needs CONN_MAX_AGE 0.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": int(pool),
        "timeout": 60,
    }
if direct_port := os.environ.get("BENCH_DIRECT_PORT"):
    # Django's advice behind a transaction pooler; asyncjobs reads it as POOL_MODE
    # "transaction" (no LISTEN on the pooled connection).
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["direct"] = {**DATABASES["default"], "PORT": direct_port}

TASKS = {"default": {"BACKEND": "asyncjobs.backend.JobsBackend", "QUEUES": ["default"]}}
ASYNCJOBS = {"POLL_INTERVAL": float(os.environ.get("BENCH_POLL_INTERVAL", 1))}
if os.environ.get("BENCH_DURABLE_CLAIMS"):  # the claim's commit waits for its flush (A/B)
    ASYNCJOBS["DURABLE_CLAIMS"] = True
if os.environ.get("BENCH_LISTEN_DIRECT"):
    ASYNCJOBS["LISTEN_DATABASE"] = "direct"
# bench/rate_limit.py: a queue under a rate limit, and one for its per-key runs, only in its
# own runs (a limited queue adds a claim under its lock to every round of a worker that
# serves it).
if os.environ.get("BENCH_RATE_LIMIT"):
    TASKS["default"]["QUEUES"] = ["default", "limited", "keyed"]
    ASYNCJOBS["QUEUES"] = {"limited": {"RATE_LIMIT": os.environ["BENCH_RATE_LIMIT"]}}
# bench/soak.py: succeeded jobs kept one minute (pruned by the workers meanwhile), as a busy
# production queue keeps its table small; its --retention-minutes sets another.
if os.environ.get("BENCH_SOAK"):
    from datetime import timedelta

    kept = timedelta(minutes=float(os.environ.get("BENCH_SOAK_RETENTION_MINUTES", 1)))
    ASYNCJOBS["RETENTION"] = {"succeeded": kept, "cancelled": kept, "failed": timedelta(days=30)}
# Every system in the comparison logs at WARNING (Celery runs with --loglevel WARNING):
# Django's own django.tasks receivers would otherwise build two INFO records per job.
LOGGING = {
    "version": 1,
    "loggers": {"asyncjobs": {"level": "WARNING"}, "django.tasks": {"level": "WARNING"}},
}
