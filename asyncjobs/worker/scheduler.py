"""Cron schedules: every worker looks for due ticks; a unique (schedule, tick) row decides
which one enqueues each tick, so a tick runs exactly once however many workers run.

After downtime, ticks that were missed follow the schedule's ``misfire`` policy:
``run_once`` (default) enqueues the latest missed tick once; ``skip`` enqueues a tick only
within ``SCHEDULE_GRACE`` of its time, so missed ones are dropped.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.db import IntegrityError, transaction
from django.tasks import Task
from django.utils.module_loading import import_string

from asyncjobs import services
from asyncjobs.backend import JobsBackend
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import Schedule, ScheduleTick

logger = logging.getLogger(__name__)

MISFIRE_POLICIES = ("run_once", "skip")


@dataclass(frozen=True)
class ScheduleSpec:
    """One entry of ``ASYNCJOBS["SCHEDULES"]``, validated."""

    name: str
    task_path: str
    cron: str
    args: list[Any]
    kwargs: dict[str, Any]
    tz: ZoneInfo
    queue: str | None
    priority: int | None
    misfire: str

    def ticks_after(self, start: datetime) -> "croniter":
        """An iterator of tick times after ``start``, in the schedule's time zone."""
        return croniter(self.cron, start.astimezone(self.tz))


def load_schedules() -> list[ScheduleSpec]:
    """The configured schedules. Raises ``ConfigurationError`` for an invalid one."""
    specs = []
    for name, entry in (jobs_settings.SCHEDULES or {}).items():
        if not isinstance(entry, dict) or "task" not in entry or "cron" not in entry:
            raise ConfigurationError(f"Schedule {name!r} needs 'task' and 'cron'.")
        if not croniter.is_valid(entry["cron"]):
            raise ConfigurationError(f"Schedule {name!r}: invalid cron {entry['cron']!r}.")
        misfire = entry.get("misfire", "run_once")
        if misfire not in MISFIRE_POLICIES:
            raise ConfigurationError(
                f"Schedule {name!r}: misfire must be one of {MISFIRE_POLICIES}."
            )
        try:
            tz = ZoneInfo(entry.get("timezone", "UTC"))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(f"Schedule {name!r}: unknown time zone.") from exc
        unknown = set(entry) - {
            "task",
            "cron",
            "args",
            "kwargs",
            "timezone",
            "queue",
            "priority",
            "misfire",
        }
        if unknown:
            raise ConfigurationError(f"Schedule {name!r}: unknown keys {sorted(unknown)}.")
        specs.append(
            ScheduleSpec(
                name=name,
                task_path=entry["task"],
                cron=entry["cron"],
                args=list(entry.get("args", [])),
                kwargs=dict(entry.get("kwargs", {})),
                tz=tz,
                queue=entry.get("queue"),
                priority=entry.get("priority"),
                misfire=misfire,
            )
        )
    return specs


class Scheduler:
    """Enqueues due ticks of the configured schedules for one backend."""

    def __init__(self, backend: JobsBackend) -> None:
        self.backend = backend
        self.using = backend.database
        self.specs = load_schedules()

    def run_due(self, *, now: datetime) -> list[str]:
        """Enqueue every schedule's due tick (per its misfire policy). Returns the names of
        the schedules this call enqueued a tick for."""
        enqueued = []
        for spec in self.specs:
            try:
                if self._run_one(spec, now):
                    enqueued.append(spec.name)
            except Exception:
                # One broken schedule (a task that no longer imports) must not stop the others.
                logger.exception("Schedule %s could not be enqueued", spec.name)
        return enqueued

    def next_tick(self, *, now: datetime) -> datetime | None:
        """The earliest upcoming tick of any schedule (to know when to look again)."""
        ticks = [spec.ticks_after(now).get_next(datetime) for spec in self.specs]
        return min(ticks) if ticks else None

    def _run_one(self, spec: ScheduleSpec, now: datetime) -> bool:
        state, created = Schedule.objects.using(self.using).get_or_create(
            name=spec.name,
            defaults={
                "task_path": spec.task_path,
                "cron": spec.cron,
                "timezone": str(spec.tz),
                "misfire": spec.misfire,
                # A new schedule starts now: it does not run ticks from before it existed.
                "last_tick": now,
            },
        )
        last = state.last_tick or now
        ticks = spec.ticks_after(last)
        due = None
        tick = ticks.get_next(datetime)
        while tick <= now:
            due = tick
            tick = ticks.get_next(datetime)
        changed = (state.task_path, state.cron, state.timezone, state.misfire, state.next_tick) != (
            spec.task_path,
            spec.cron,
            str(spec.tz),
            spec.misfire,
            tick,
        )
        if due is None:
            if changed:
                Schedule.objects.using(self.using).filter(pk=spec.name).update(
                    task_path=spec.task_path,
                    cron=spec.cron,
                    timezone=str(spec.tz),
                    misfire=spec.misfire,
                    next_tick=tick,
                )
            return False
        ran = False
        if spec.misfire == "run_once" or now - due <= jobs_settings.SCHEDULE_GRACE:
            ran = self._enqueue_tick(spec, due, now)
        elif not created:
            logger.warning(
                "Schedule %s: tick %s missed by %s, skipped (misfire=skip)",
                spec.name,
                due,
                now - due,
            )
        Schedule.objects.using(self.using).filter(pk=spec.name).update(
            last_tick=due,
            next_tick=tick,
            task_path=spec.task_path,
            cron=spec.cron,
            timezone=str(spec.tz),
            misfire=spec.misfire,
        )
        return ran

    def _enqueue_tick(self, spec: ScheduleSpec, tick: datetime, now: datetime) -> bool:
        task = import_string(spec.task_path)
        if not isinstance(task, Task):
            raise ConfigurationError(f"Schedule {spec.name!r}: {spec.task_path} is not a task.")
        changes: dict[str, Any] = {}
        if spec.queue:
            changes["queue_name"] = spec.queue
        if spec.priority is not None:
            changes["priority"] = spec.priority
        if changes:
            task = task.using(**changes)
        try:
            with transaction.atomic(using=self.using):
                # The tick row first: a second worker's insert fails here and enqueues nothing.
                row = ScheduleTick.objects.using(self.using).create(
                    schedule=spec.name, tick=tick, enqueued_at=now
                )
                job = self.backend.build_job(task, spec.args, spec.kwargs, now)
                services.enqueue_jobs([job], using=self.using, now=now)
                row.job_id = job.pk
                row.save(update_fields=["job_id"])
        except IntegrityError:
            return False
        logger.info(
            "Schedule %s: enqueued tick %s as job %s",
            spec.name,
            tick.isoformat(),
            job.pk,
            extra={"schedule": spec.name, "job_id": str(job.pk)},
        )
        return True
