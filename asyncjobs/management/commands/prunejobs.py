"""``manage.py prunejobs``: delete old finished jobs in small batches."""

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from asyncjobs import services
from asyncjobs.models import TERMINAL_STATUSES

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` (or a number of seconds) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 15m, 12h, 7d or 2w")
    return timedelta(seconds=float(match[1]) * UNITS.get(match[2] or "s", 1))


class Command(BaseCommand):
    help = (
        "Delete finished jobs (and their attempts) older than a duration, in small batches. "
        "Only succeeded, failed and cancelled jobs are ever deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            help="Age by finish time: 90s, 15m, 12h, 7d, 2w.",
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=sorted(TERMINAL_STATUSES),
            help="Statuses to prune (repeatable). Default: succeeded and cancelled.",
        )
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--dry-run", action="store_true", help="Only count.")
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = parse_duration(options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        statuses = options["status"] or ["succeeded", "cancelled"]
        counts = services.prune_jobs(
            now=timezone.now(),
            older_than=dict.fromkeys(statuses, age),
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            using=options["database"],
        )
        verb = "Would delete" if options["dry_run"] else "Deleted"
        for status in statuses:
            self.stdout.write(f"{verb} {counts.get(status, 0)} {status} jobs older than {age}.")
        if not options["dry_run"]:
            # Finished batches with no job left (their jobs pruned above or before).
            batches = services.prune_batches(
                now=timezone.now(), older_than=age, using=options["database"]
            )
            self.stdout.write(f"Deleted {batches} finished batches older than {age}.")
