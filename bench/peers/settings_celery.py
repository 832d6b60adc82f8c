"""Celery's Django project for the I/O-bound benchmark's ORM task (bench/peers/celery_io.py)."""

from bench.peers.settings_common import *  # noqa: F403
from bench.peers.settings_common import database

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {"default": database("peers_celery")}
