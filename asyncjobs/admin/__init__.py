"""The operator's admin: jobs (inspect, retry, cancel, run now, delete), the dead letter
grouped by task and error, batches (progress, retry the failed, cancel the rest), workers,
queues (pause/resume), schedules, the dashboard.

Every action goes through the same services as the Python and REST APIs, needs its own
permission, and reports what it changed and what it skipped and why.

One module per page: ``jobs`` (list and job page), ``actions`` (job actions, dead letter,
JSON downloads), ``batches``, ``workers``, ``queues``, ``schedules``, ``dashboard``;
``display`` holds what they share. Importing this package registers every ModelAdmin (Django's admin
autodiscovery imports it).
"""

from asyncjobs.admin.actions import JobActions
from asyncjobs.admin.batches import BatchAdmin, StateFilter
from asyncjobs.admin.dashboard import DashboardAdmin, throughput_svg
from asyncjobs.admin.display import (
    EstimatedCountPaginator,
    ReadOnlyMixin,
    badge,
    bounded_json,
    compact_age,
    precise_time,
    pretty_json,
    progress_bar,
)
from asyncjobs.admin.jobs import AttemptInline, JobAdmin, QueueFilter, TaskFilter
from asyncjobs.admin.queues import QueueStateAdmin, QueueStateForm
from asyncjobs.admin.schedules import ScheduleAdmin, ScheduleTickAdmin
from asyncjobs.admin.workers import WorkerAdmin

__all__ = [
    "AttemptInline",
    "BatchAdmin",
    "DashboardAdmin",
    "EstimatedCountPaginator",
    "JobActions",
    "JobAdmin",
    "QueueFilter",
    "QueueStateAdmin",
    "QueueStateForm",
    "ReadOnlyMixin",
    "ScheduleAdmin",
    "ScheduleTickAdmin",
    "StateFilter",
    "TaskFilter",
    "WorkerAdmin",
    "badge",
    "bounded_json",
    "compact_age",
    "precise_time",
    "pretty_json",
    "progress_bar",
    "throughput_svg",
]
