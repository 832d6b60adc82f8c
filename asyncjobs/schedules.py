"""Cron schedules as configured in ``ASYNCJOBS["SCHEDULES"]``: parsing and validation.

The worker's ``asyncjobs.worker.maintenance.cron`` enqueues their ticks; the system checks use
this module to report a bad schedule at start-up.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from asyncjobs.conf import jobs_settings
from asyncjobs.exceptions import ConfigurationError

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
