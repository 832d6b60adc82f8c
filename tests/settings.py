"""Settings for the test suite. ``DATABASE_URL`` selects PostgreSQL; default SQLite."""

import json
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
    "django.contrib.admin",
    "django.contrib.messages",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the example project's /api/docs/, tested in tests/api
    "asyncjobs",
    "example_project.demo",
    "tests",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "asyncjobs.middleware.EnqueuedByMiddleware",
]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    },
]
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "asyncjobs",
    "VERSION": "0.1.0",
    # As the example project: Swagger UI and ReDoc from the installed sidecar, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests

_db_dir = Path(os.environ.get("ASYNCJOBS_TEST_DIR", BASE_DIR.parent / ".test-data"))
_db_dir.mkdir(exist_ok=True)
DATABASES = {"default": database_from_env(_db_dir / "tests.sqlite3")}
# ASYNCJOBS_TEST_POOLER=transaction: DATABASE_URL points at a PgBouncer in transaction mode
# (scripts/test.sh starts one); "direct" is the same database without it, for LISTEN.
_POOLER = os.environ.get("ASYNCJOBS_TEST_POOLER")
if _POOLER:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["direct"] = {
        **DATABASES["default"],
        "PORT": os.environ.get("ASYNCJOBS_TEST_DIRECT_PORT", "5432"),
        "TEST": {"MIRROR": "default"},
    }

TASKS = {
    "default": {
        "BACKEND": "asyncjobs.backend.JobsBackend",
        "QUEUES": ["default", "emails", "low", "other", "reports", "partner"],
    },
}


def _seconds(name: str, default: float) -> timedelta:
    return timedelta(seconds=float(os.environ.get(name, default)))


# Worker subprocesses started by the tests read their timings (and queue limits, as JSON)
# from the environment.
ASYNCJOBS = {
    "QUEUES": json.loads(os.environ.get("ASYNCJOBS_TEST_QUEUES", "{}")),
    "BACKOFF": None,
    "LEASE_DURATION": _seconds("ASYNCJOBS_TEST_LEASE", 60),
    "HEARTBEAT_INTERVAL": _seconds("ASYNCJOBS_TEST_HEARTBEAT", 10),
    "MAINTENANCE_INTERVAL": _seconds("ASYNCJOBS_TEST_MAINTENANCE", 15),
    "POLL_INTERVAL": _seconds("ASYNCJOBS_TEST_POLL", 1),
    "PRUNE_BATCH_SIZE": int(os.environ.get("ASYNCJOBS_TEST_PRUNE_BATCH", 500)),
    # The tests' own HTTP server listens on 127.0.0.1.
    "OUTBOUND_ALLOWED_URLS": (r"^http://127\.0\.0\.1:\d+/",),
    "OUTBOUND_ALLOWED_NETWORKS": ("127.0.0.0/8",),
    "OUTBOUND_TIMEOUT": float(os.environ.get("ASYNCJOBS_TEST_OUTBOUND_TIMEOUT", 2)),
    "WEBHOOK_SECRET": "test-webhook-secret",
    "API_EVENTS_MAX_DURATION": 3,
    "LISTEN_DATABASE": "direct" if _POOLER else None,
    # ASYNCJOBS_TEST_FAST_PATH=0: the suite with asyncjobs.db's fast paths off (the ORM and
    # Django's cursors instead).
    "FAST_PATH": os.environ.get("ASYNCJOBS_TEST_FAST_PATH", "1") != "0",
    "SCHEDULES": (
        {
            "cron": {
                "task": "tests.tasks.record",
                "cron": os.environ["ASYNCJOBS_TEST_SCHEDULE"],
                "args": ["cron"],
            }
        }
        if os.environ.get("ASYNCJOBS_TEST_SCHEDULE")
        else {}
    ),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The example project's scenarios are tested here too (tests/test_example_project.py).
MEDIA_ROOT = str(_db_dir / "media")
MEDIA_URL = "/media/"
DEMO_BASE_URL = os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000")
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
DEMO_CRM_FAILURE_RATE = float(os.environ.get("DEMO_CRM_FAILURE_RATE", "0"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "asyncjobs": {"handlers": ["stderr"], "level": os.environ.get("ASYNCJOBS_LOG", "INFO")}
    },
}
