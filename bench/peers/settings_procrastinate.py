"""procrastinate with its Django integration (tasks from bench/peers/procapp/tasks.py)."""

from bench.peers.settings_common import *  # noqa: F403
from bench.peers.settings_common import database

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "procrastinate.contrib.django",
    "bench.peers.procapp",
]
DATABASES = {"default": database("peers_procrastinate")}
