"""Maintenance as named services, each with its interval and ``run(now=...)``:

- ``Rescuer`` (``rescuer.py``): jobs whose lease expired, workers that stopped beating;
- ``Pruner`` (``pruner.py``): finished jobs past ``RETENTION``, old worker rows;
- ``CronTicker`` (``cron.py``): due ticks of the ``SCHEDULES``;
- ``Promoter`` (``promoter.py``): due scheduled jobs and retries (run by the claim loop).

``Maintenance`` (``loop.py``) runs them on a thread of their own: the Rescuer and the Pruner
only in the worker that holds the cluster-wide maintenance lock, the CronTicker in every
worker (a tick's unique row decides which one enqueues it).
"""

from asyncjobs.worker.maintenance.base import AGAIN_AFTER, Done, Service
from asyncjobs.worker.maintenance.cron import CronTicker, Scheduler
from asyncjobs.worker.maintenance.loop import Maintenance
from asyncjobs.worker.maintenance.promoter import Promoter
from asyncjobs.worker.maintenance.pruner import PRUNE_TIME_LIMIT, Pruner
from asyncjobs.worker.maintenance.rescuer import RESCUE_LIMIT, Rescuer

__all__ = [
    "AGAIN_AFTER",
    "PRUNE_TIME_LIMIT",
    "RESCUE_LIMIT",
    "CronTicker",
    "Done",
    "Maintenance",
    "Promoter",
    "Pruner",
    "Rescuer",
    "Scheduler",
    "Service",
]
