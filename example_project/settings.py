"""The example project: SQLite by default, PostgreSQL when DATABASE_URL is set.

Safe when exposed by mistake: DEBUG is off unless DJANGO_DEBUG=1 (``make demo`` sets it), and
with DEBUG off it refuses to start without a strong DJANGO_SECRET_KEY (see security.py).
"""

import hashlib
import hmac
import os
from pathlib import Path

from example_project import security
from example_project.database import database_from_env

BASE_DIR = Path(__file__).resolve().parent
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
SECRET_KEY = security.secret_key(os.environ.get("DJANGO_SECRET_KEY"), debug=DEBUG)
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
# The debug page and error emails hide DATABASE_URL (runserver passes the environment to
# every request) as well as the settings Django hides already.
DEFAULT_EXCEPTION_REPORTER_FILTER = "example_project.security.DemoExceptionReporterFilter"
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served by the project, not from a CDN
    "asyncjobs",
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # X-Frame-Options: DENY (Django's default): no page of the demo can be framed.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Jobs enqueued during a request belong to its user, who may then poll them.
    "asyncjobs.middleware.EnqueuedByMiddleware",
]
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SPECTACULAR_SETTINGS = {
    "TITLE": "asyncjobs example API",
    "DESCRIPTION": "Poll jobs, stream their events, create HTTP callback jobs.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": database_from_env(BASE_DIR / "db.sqlite3")}

TASKS = {
    "default": {
        "BACKEND": "asyncjobs.backend.JobsBackend",
        "QUEUES": ["default", "emails", "reports", "partner"],
    }
}
# Where the demo's tasks reach the demo's own fake services (the flaky CRM, the partner API).
DEMO_BASE_URL = os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000")

ASYNCJOBS = {
    "MAX_ATTEMPTS": 3,
    # The partner API allows 3 calls per second, whatever the number of workers.
    "QUEUES": {"emails": {"MAX_ATTEMPTS": 5}, "partner": {"RATE_LIMIT": "3/s"}},
    # Callback jobs and webhooks may call the demo's own fake services, on the demo's own
    # port, and nothing else on this machine (not the admin, not PostgreSQL's port).
    # Production settings allow no loopback address at all.
    "OUTBOUND_ALLOWED_URLS": security.outbound_allowed_urls(DEMO_BASE_URL),
    "OUTBOUND_ALLOWED_NETWORKS": ("127.0.0.1/32", "::1/128"),
    # Derived from SECRET_KEY unless given: a published default would let anyone sign notices.
    "WEBHOOK_SECRET": os.environ.get("ASYNCJOBS_WEBHOOK_SECRET")
    or hmac.new(SECRET_KEY.encode(), b"asyncjobs-webhooks", hashlib.sha256).hexdigest(),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"asyncjobs": {"handlers": ["console"], "level": "INFO"}},
}
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}

MEDIA_ROOT = os.environ.get("DEMO_MEDIA_ROOT", str(BASE_DIR / "media"))
MEDIA_URL = "/media/"
# How often the fake CRM answers 503.
DEMO_CRM_FAILURE_RATE = float(os.environ.get("DEMO_CRM_FAILURE_RATE", "0.33"))
