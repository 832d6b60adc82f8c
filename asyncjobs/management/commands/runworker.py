"""``manage.py runworker``: run asyncjobs jobs until stopped."""

import logging
import sys
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from asyncjobs.exceptions import ConfigurationError
from asyncjobs.worker.runner import Runner


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Run background jobs: claim ready jobs from the database, run them with retries, and "
        "stop gracefully on SIGTERM or SIGINT (a second signal exits at once)."
    )
    requires_system_checks = "__all__"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue",
            "-q",
            action="append",
            dest="queues",
            metavar="QUEUE",
            help="Take jobs from this queue; repeat for several. Default: all of the "
            "backend's QUEUES.",
        )
        parser.add_argument(
            "--concurrency",
            "-c",
            type=_positive_int,
            default=4,
            help="Jobs run at once, each in a thread of its own (async tasks on the worker's "
            "event loop, their thread waiting) (default 4).",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit 0 once no job is ready and none is running.",
        )
        parser.add_argument(
            "--max-jobs", type=_positive_int, help="Exit 0 after running this many jobs."
        )
        parser.add_argument(
            "--poll-interval",
            type=_seconds,
            help="Seconds between looks at the queue when idle (default ASYNCJOBS "
            "POLL_INTERVAL, 1; 0.2 on MariaDB/MySQL if unset). PostgreSQL also wakes on NOTIFY.",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=_seconds,
            help="Seconds a stopping worker lets running jobs finish before releasing them "
            "(default ASYNCJOBS SHUTDOWN_TIMEOUT, 30).",
        )
        parser.add_argument(
            "--max-memory",
            type=_positive_int,
            metavar="MIB",
            help="Resident memory in MiB past which the worker fails its running attempts and "
            "exits with status 4 for its supervisor to restart it (default ASYNCJOBS "
            "WORKER_MAX_MEMORY: no limit). Linux.",
        )
        parser.add_argument(
            "--prefetch",
            type=_non_negative_int,
            metavar="N",
            help="Jobs the worker may claim ahead of its free slots; it holds about 0.1 s of "
            "work at the jobs' recent pace, up to N (default ASYNCJOBS WORKER_PREFETCH, 64). "
            "0 claims only for free slots.",
        )
        parser.add_argument(
            "--max-connections",
            type=_non_negative_int,
            metavar="N",
            help="Database connections the job slots hold at once (per database) when "
            "--concurrency is larger; a slot then closes its connection after each job "
            "(default ASYNCJOBS MAX_DB_CONNECTIONS, 10; 0: no bound). The worker's own threads "
            "hold 4 more (5 with LISTEN on PostgreSQL).",
        )
        parser.add_argument(
            "--backend",
            default="default",
            help="The TASKS alias of the asyncjobs backend (default 'default').",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._configure_logging(options["verbosity"])
        try:
            runner = Runner(
                backend=options["backend"],
                queues=options["queues"],
                concurrency=options["concurrency"],
                burst=options["burst"],
                max_jobs=options["max_jobs"],
                poll_interval=_delta(options["poll_interval"]),
                shutdown_timeout=_delta(options["shutdown_timeout"]),
                max_memory=options["max_memory"],
                prefetch=options["prefetch"],
                max_connections=options["max_connections"],
            )
        except (ConfigurationError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        code = runner.run()
        if code:
            sys.exit(code)

    def _configure_logging(self, verbosity: int) -> None:
        """Show asyncjobs' logs on stderr unless the project configured a handler for them;
        the level follows ``--verbosity`` unless the project set the logger's own level."""
        logger = logging.getLogger("asyncjobs")
        if logger.handlers or logging.getLogger().handlers:
            return
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


def _delta(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds is not None else None
