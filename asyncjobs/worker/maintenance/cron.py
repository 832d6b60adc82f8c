"""CronTicker: cron schedules. Every worker looks for due ticks; a unique (schedule, tick)
row decides which one enqueues each tick, so a tick runs exactly once however many workers
run.

After downtime, ticks that were missed follow the schedule's ``misfire`` policy:
``run_once`` (default) enqueues the latest missed tick once; ``skip`` enqueues a tick only
within ``SCHEDULE_GRACE`` of its time, so missed ones are dropped.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from asyncjobs import services
from asyncjobs.backend import JobsBackend
from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError
from asyncjobs.models import Schedule, ScheduleTick
from asyncjobs.schedules import ScheduleSpec, load_schedules
from asyncjobs.tasks_api import Task
from asyncjobs.worker.maintenance.base import Done

logger = logging.getLogger(__name__)


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


class CronTicker:
    """Enqueues due cron ticks, in every worker and without the maintenance lock (a tick's
    unique row lets one worker enqueue it): at each upcoming tick, and at least every
    ``HEARTBEAT_INTERVAL`` (a schedule's row may have been changed meanwhile).

    Parameters:
        scheduler: the worker's schedules.
    """

    name = "cron"
    locked = False

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @property
    def interval(self) -> timedelta:
        """``HEARTBEAT_INTERVAL``: the longest time between looks."""
        return jobs_settings.HEARTBEAT_INTERVAL

    def run(self, *, now: datetime) -> Done:
        """Enqueue the ticks due at ``now``; run again at the next tick."""
        enqueued = self.scheduler.run_due(now=now)
        upcoming = self.scheduler.next_tick(now=now)
        again = None
        if upcoming is not None:
            again = min(max(upcoming - timezone.now(), timedelta(seconds=0.01)), self.interval)
        return Done({"cron_ticks": len(enqueued)}, again_after=again)
