"""The lock rows and rate state of queues and of per-task or per-key limits."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class QueueState(models.Model):
    """Operator-set state of a queue, and the lock row of its limits. A queue without a row
    is active."""

    name = models.CharField(max_length=100, primary_key=True)
    paused = models.BooleanField(default=False)
    changed_at = models.DateTimeField()
    # Rate limiting (GCRA): the earliest time the queue may start its next job.
    rate_next_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("queue")
        verbose_name_plural = _("queues")
        permissions = (("pause_queue", "Can pause and resume queues"),)

    def __str__(self) -> str:
        return f"{self.name} ({'paused' if self.paused else 'active'})"


class LimitState(models.Model):
    """The lock row and rate state of one per-task or per-key limit."""

    key = models.CharField(max_length=255, primary_key=True)
    rate_next_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("limit")
        verbose_name_plural = _("limits")

    def __str__(self) -> str:
        return self.key
