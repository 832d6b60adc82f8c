"""Cron schedules, mirrored for the admin, and the ticks that were enqueued."""

from typing import ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _


class Schedule(models.Model):
    """A cron schedule from ``ASYNCJOBS["SCHEDULES"]``, mirrored for the admin, with the last
    tick that was enqueued."""

    name = models.CharField(max_length=100, primary_key=True)
    task_path = models.CharField(_("task"), max_length=255)
    cron = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64, default="UTC")
    misfire = models.CharField(max_length=16, default="run_once")
    last_tick = models.DateTimeField(null=True, blank=True)
    next_tick = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")

    def __str__(self) -> str:
        return f"{self.name} ({self.cron})"


class ScheduleTick(models.Model):
    """One tick of a schedule that was enqueued. The unique constraint on (schedule, tick) is
    what makes a tick run once however many workers see it."""

    schedule = models.CharField(max_length=100)
    tick = models.DateTimeField()
    job_id = models.UUIDField(null=True, blank=True)
    enqueued_at = models.DateTimeField()

    class Meta:
        verbose_name = _("schedule tick")
        verbose_name_plural = _("schedule ticks")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["schedule", "tick"], name="asyncjobs_tick_once"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.tick.isoformat()}"
