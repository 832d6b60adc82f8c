"""Workflows: batches of jobs, with callbacks once they are done; and dependencies between
jobs (``JobDependency``), which chains are made of.

A batch keeps its own counters (``pending``, ``succeeded``, ``failed``, ``cancelled``),
updated in the transaction that records each job's end, so finding out whether a batch is
done never counts its jobs. While a batch is open (``sealed_at`` unset) jobs may still be
added and nothing fires; once sealed, the transaction that brings ``pending`` to zero fires
the callbacks under the batch row's lock, so each fires once however many workers finish
its last jobs at the same moment.

On PostgreSQL a worker's flush of successes that finds the batch row locked by another
(whose commit it would otherwise wait for) leaves its count in a ``BatchTally`` row
instead, which the next holder of the row's lock adds to the row and deletes: a batch's
counts are its row's plus its tallies' (``Batch.objects.counted()``).
"""

import uuid
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _


class BatchState(models.TextChoices):
    """Where a batch is, derived from its counters (not stored)."""

    OPEN = "open", _("Open")  # jobs may still be added; callbacks wait for the seal
    RUNNING = "running", _("Running")  # sealed, some jobs not finished
    SUCCEEDED = "succeeded", _("Succeeded")  # every job succeeded
    FAILED = "failed", _("Failed")  # every job finished, some failed or were cancelled


class BatchQuerySet(models.QuerySet["Batch"]):
    """Batches; ``counted()`` reads their counts with the tallies not yet added to them."""

    def counted(self) -> "BatchQuerySet":
        """These batches with their counters as they stand: each row's plus the
        ``BatchTally`` rows not yet added to it (an indexed sum per batch, over a few rows:
        each flush that takes the batch row's lock adds them in). For pages and the API,
        not for updates."""
        tallies = BatchTally.objects.filter(batch=models.OuterRef("pk")).values("batch")
        sums = {
            f"tally_{name}": Coalesce(
                models.Subquery(tallies.annotate(n=models.Sum(name)).values("n")[:1]),
                0,
                output_field=models.IntegerField(),
            )
            for name in TALLIED
        }
        counted = self.annotate(**sums)
        counted._iterable_class = _CountedIterable
        return counted


TALLIED = ("succeeded", "failed", "cancelled")


class _CountedIterable(models.query.ModelIterable):
    """Adds each batch's ``tally_*`` annotations into its counters."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        for batch in super().__iter__():
            values = batch.__dict__
            for name in TALLIED:
                extra = values.pop(f"tally_{name}", 0) or 0
                values[name] += extra
                values["pending"] -= extra
            yield batch


class Batch(models.Model):
    """A group of jobs enqueued together, with callbacks when they have all finished."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    backend = models.CharField(max_length=100, default="default")
    description = models.CharField(max_length=255, blank=True, default="")
    enqueued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    created_at = models.DateTimeField()
    sealed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Counters, kept in the transactions that add jobs and record their ends.
    total = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0, help_text=_("Jobs not finished yet."))
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)

    # {"on_success": {task spec}, "on_complete": {...}, "on_failure": {...}}: the task path,
    # arguments and options of each callback, enqueued when it fires.
    callbacks = models.JSONField(default=dict, blank=True)
    # When each callback fired: each fires at most once in the life of the batch.
    success_fired_at = models.DateTimeField(null=True, blank=True)
    complete_fired_at = models.DateTimeField(null=True, blank=True)
    failure_fired_at = models.DateTimeField(null=True, blank=True)
    webhook_url = models.URLField(max_length=2000, blank=True)

    objects = BatchQuerySet.as_manager()

    class Meta:
        verbose_name = _("batch")
        verbose_name_plural = _("batches")
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["-created_at"], name="asyncjobs_batch_created"),
            models.Index(fields=["finished_at"], name="asyncjobs_batch_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.description or 'batch'} {self.id}"

    @property
    def state(self) -> BatchState:
        """Open, running, succeeded or failed (see ``BatchState``)."""
        if self.sealed_at is None:
            return BatchState.OPEN
        # (Counts read with the tallies added in may reach zero a moment before the finish.)
        if self.pending or self.finished_at is None:
            return BatchState.RUNNING
        if self.failed or self.cancelled:
            return BatchState.FAILED
        return BatchState.SUCCEEDED

    @property
    def finished(self) -> int:
        """Jobs that reached a terminal status."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def percent(self) -> float:
        """Finished jobs as a percentage of all (100 for an empty sealed batch)."""
        if not self.total:
            return 0.0 if self.sealed_at is None else 100.0
        return round(100.0 * self.finished / self.total, 1)


class BatchTally(models.Model):
    """Jobs of a batch that succeeded, failed or were cancelled, not yet counted on its row.

    Written (PostgreSQL) by a flush that found the batch row locked by another transaction:
    an insert, which waits for no one, where an update of the row would wait for the other
    transaction's commit. The next transaction that holds the row's lock deletes the batch's
    tallies and adds them to the row (``services.batches``); until then readers add them in
    (``Batch.objects.counted()``). No database foreign key, as for ``Job.batch``.
    """

    batch = models.ForeignKey(
        Batch, on_delete=models.CASCADE, db_constraint=False, related_name="tallies"
    )
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("batch tally")
        verbose_name_plural = _("batch tallies")

    def __str__(self) -> str:
        return f"{self.batch_id}: +{self.succeeded}/{self.failed}/{self.cancelled}"


class DependencyPolicy(models.TextChoices):
    """What a dependent does when a job it depends on fails for good or is cancelled."""

    CANCEL = "cancel", _("Cancel")  # it is cancelled too, and so are its own dependents
    RUN = "run", _("Run")  # it runs anyway, once its other dependencies have ended


class JobDependency(models.Model):
    """An edge ``dependent`` → ``parent``: ``dependent`` waits until ``parent`` has ended.

    The parent exists before the edge (it is locked while the edge is added), so edges never
    form a cycle. An edge is resolved once, in the transaction that ends its parent, and
    remembers how the parent ended (``outcome``); a parent retried out of the dead letter
    reopens the edges whose dependents it cancelled (see ``services.dependencies``).
    No database foreign keys, as for ``Job.batch``: deleting jobs (pruning) never checks this
    table row by row, and Django's cascade removes a deleted job's edges.
    """

    dependent = models.ForeignKey(
        "asyncjobs.Job",
        on_delete=models.CASCADE,
        db_constraint=False,
        db_index=False,  # the unique constraint's index leads with it
        related_name="dependencies",
    )
    parent = models.ForeignKey(
        "asyncjobs.Job",
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="dependents",
    )
    on_failure = models.CharField(
        max_length=8, choices=DependencyPolicy.choices, default=DependencyPolicy.CANCEL
    )
    # The parent's return value is prepended to the dependent's arguments (chains).
    pass_result = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    # The parent's terminal status once resolved ("succeeded", "failed", "cancelled").
    outcome = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        verbose_name = _("job dependency")
        verbose_name_plural = _("job dependencies")
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["dependent", "parent"], name="asyncjobs_dependency_unique"
            ),
            models.CheckConstraint(
                condition=~Q(dependent=models.F("parent")), name="asyncjobs_dependency_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dependent_id} after {self.parent_id}"
