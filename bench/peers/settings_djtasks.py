"""django-tasks-db: Django's tasks framework with the ORM database backend."""

from bench.peers.settings_common import *  # noqa: F403
from bench.peers.settings_common import database

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_tasks_db"]
DATABASES = {"default": database("peers_djtasks")}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
