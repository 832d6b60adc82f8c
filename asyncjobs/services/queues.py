"""Queues: their names, and pausing and resuming them."""

import logging
from datetime import datetime
from typing import Protocol

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Model

from asyncjobs import db, monitoring
from asyncjobs.exceptions import UnknownQueueError
from asyncjobs.models import QueueState

logger = logging.getLogger(__name__)

PAUSE_QUEUE_PERMISSION = "asyncjobs.pause_queue"


class PermissionHolder(Protocol):
    """A user whose permissions can be checked: any user model with Django's permissions
    (``PermissionsMixin``, or its own ``has_perm``), and ``AnonymousUser``."""

    def has_perm(self, perm: str, obj: Model | None = None) -> bool:
        """Whether the user has ``perm``."""
        ...


def can_pause_queues(user: PermissionHolder | None) -> bool:
    """Whether ``user`` may pause and resume queues: the ``asyncjobs.pause_queue``
    permission (superusers have it). The one check behind the admin's pages and actions, the
    API's ``/jobs/queues/<name>/pause/`` and ``set_queue_paused(..., user=...)``."""
    return bool(user is not None and user.has_perm(PAUSE_QUEUE_PERMISSION))


def check_queue_name(name: str, *, paused: bool, using: str = "default") -> None:
    """Refuse to pause a queue that is not configured: raises ``UnknownQueueError`` unless
    ``name`` is one of ``monitoring.configured_queues`` (or a backend takes any queue name).
    Resuming a queue that is paused is always allowed, so a queue removed from the settings
    while paused can still be resumed."""
    valid = bool(name) and len(name) <= int(QueueState._meta.get_field("name").max_length or 0)
    valid = valid and name.isprintable()  # no NUL, which PostgreSQL refuses in a statement
    known = monitoring.configured_queues(using=using)
    if valid and (name in known or monitoring.accepts_any_queue(using=using)):
        return
    if valid and not paused and QueueState.objects.using(using).filter(name=name).exists():
        return
    raise UnknownQueueError(name, known)


def set_queue_paused(
    name: str,
    paused: bool,
    *,
    now: datetime,
    using: str = "default",
    user: PermissionHolder | None = None,
) -> None:
    """Pause or resume a queue. Workers stop (or start) claiming from it at once on
    PostgreSQL (they are notified at commit), within one poll interval elsewhere; enqueueing
    to a paused queue still works. Every path that pauses or resumes (the admin, the API,
    ``manage.py jobqueue``, Python code) comes through here.

    Parameters: ``name``, the queue; ``paused``, pause (True) or resume (False); ``now``, the
    time recorded as ``changed_at``; ``using``, the database alias; ``user``, the user acting
    for the admin and the API: ``django.core.exceptions.PermissionDenied`` unless
    ``can_pause_queues(user)`` (None, for code and the command line, checks nothing).
    Raises ``UnknownQueueError`` as ``check_queue_name`` does.
    """
    if user is not None and not can_pause_queues(user):
        raise PermissionDenied("Pausing and resuming queues needs asyncjobs.pause_queue.")
    check_queue_name(name, paused=paused, using=using)
    with transaction.atomic(using=using):
        QueueState.objects.using(using).update_or_create(
            name=name, defaults={"paused": paused, "changed_at": now}
        )
        db.announce_queue_change(using, name)
    logger.info("Queue %s %s", name, "paused" if paused else "resumed", extra={"queue": name})


def paused_queues(*, using: str = "default") -> set[str]:
    """The names of the paused queues."""
    return set(QueueState.objects.using(using).filter(paused=True).values_list("name", flat=True))
