"""Create the demo admin user, the shop's products, and a first batch of demo jobs."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.crypto import get_random_string

from asyncjobs import enqueue_many
from example_project.demo import tasks, views
from example_project.demo.models import Product


class Command(BaseCommand):
    help = "Create the demo superuser (printing its password), products, and demo jobs."

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
        for sku, name, price, stock in views.PRODUCTS:
            Product.objects.get_or_create(
                sku=sku, defaults={"name": name, "price_cents": price, "stock": stock}
            )
        with transaction.atomic():
            suffix = get_random_string(4).lower()
            newcomer = User.objects.create_user(f"demo-{suffix}", f"demo-{suffix}@example.com")
            _, signup_jobs = tasks.start_signup(newcomer.pk)
            report = tasks.start_report(100, fail_first_attempt=True)
            results = enqueue_many(
                [(tasks.call_partner, (i,), {}) for i in range(1, 11)]
                + [(tasks.always_fails, ("the demo asked for it",), {})]
            )
        count = len(signup_jobs) + report.refresh().total + len(results)
        self.stdout.write(
            f"Enqueued {count} demo jobs: a sign-up fan-out (a batch of five), a report (a "
            "batch of 4 chunks, one of whose first attempt fails), 10 rate-limited partner "
            "calls, and a job for the dead letter."
        )
