"""Create the demo admin user and a first batch of demo jobs."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils.crypto import get_random_string

from asyncjobs import enqueue_many
from example_project.demo import tasks


class Command(BaseCommand):
    help = "Create the demo superuser (printing its password) and enqueue demo jobs."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = os.environ.get("DEMO_ADMIN_USER", "admin")
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or get_random_string(12)
        user, _ = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(password)
        user.save()
        self.stdout.write(f"Admin user: {username} / password: {password}")
        results = enqueue_many(
            [(tasks.send_welcome_email, (i,), {}) for i in range(1, 4)]
            + [(tasks.sync_crm, (i,), {}) for i in range(1, 6)]
            + [(tasks.build_report, (100,), {}), (tasks.always_fails, ("demo",), {})]
        )
        self.stdout.write(f"Enqueued {len(results)} demo jobs.")
