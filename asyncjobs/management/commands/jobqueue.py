"""``manage.py jobqueue``: list queues, pause or resume one."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from django.utils import timezone

from asyncjobs import monitoring, services
from asyncjobs.exceptions import UnknownQueueError
from asyncjobs.models import Job
from asyncjobs.tasks_api import task_backends


class Command(BaseCommand):
    help = (
        "Pause or resume a queue (workers stop or start claiming from it at once on "
        "PostgreSQL, within one poll interval on SQLite; enqueueing still works), or list "
        "queues with their state and depth."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "pause", "resume"])
        parser.add_argument("queue", nargs="?")
        parser.add_argument("--backend", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = task_backends[options["backend"]]
        using = getattr(backend, "database", "default")
        if options["action"] == "list":
            paused = services.paused_queues(using=using)
            depth = dict(
                Job.objects.using(using)
                .ready()
                .values("queue_name")
                .annotate(n=Count("pk"))
                .values_list("queue_name", "n")
                .order_by()
            )
            for name in sorted(monitoring.configured_queues(using=using) | paused | set(depth)):
                state = "paused" if name in paused else "active"
                self.stdout.write(f"{name}\t{state}\t{depth.get(name, 0)} queued")
            return
        name = options["queue"]
        if not name:
            raise CommandError(f"jobqueue {options['action']} needs a queue name.")
        try:
            # The operator's shell: no user to check, the same service and queue check as
            # the admin and the API.
            services.set_queue_paused(
                name, options["action"] == "pause", now=timezone.now(), using=using
            )
        except UnknownQueueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Queue {name} {options['action']}d.")
