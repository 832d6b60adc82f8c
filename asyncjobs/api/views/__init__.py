"""Views of the client API: poll a job, stream its events, retry or cancel it, follow a
batch, list and count jobs (``asyncjobs.view_job``), pause queues, create HTTP callback jobs.

``jobs`` (one job), ``events`` (event streams), ``batches`` (one batch and its stream),
``listing`` (the job list and the creation of callback jobs), ``operator`` (statistics,
pauses); ``common`` holds what they share. Every view is importable from here, as
``asyncjobs.api.urls`` does.
"""

from asyncjobs.api.views.batches import BatchDetailView, BatchEventsView
from asyncjobs.api.views.events import JobEventsView
from asyncjobs.api.views.jobs import (
    JobActionView,
    JobCancelView,
    JobDetailView,
    JobResultView,
    JobRetryView,
)
from asyncjobs.api.views.listing import JobListCreateView, JobPagination
from asyncjobs.api.views.operator import QueuePauseView, StatsView

__all__ = [
    "BatchDetailView",
    "BatchEventsView",
    "JobActionView",
    "JobCancelView",
    "JobDetailView",
    "JobEventsView",
    "JobListCreateView",
    "JobPagination",
    "JobResultView",
    "JobRetryView",
    "QueuePauseView",
    "StatsView",
]
