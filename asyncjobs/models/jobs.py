"""Jobs and their attempts: the durable record of each enqueued task call and of each
execution of it."""

import uuid
from datetime import datetime, timedelta
from typing import ClassVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from asyncjobs.models.fields import StoredJSONField
from asyncjobs.tasks_api import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskResultStatus


class JobStatus(models.TextChoices):
    """Where a job is in its lifecycle."""

    WAITING = "waiting", _("Waiting")  # for the jobs it depends on (asyncjobs.workflows)
    SCHEDULED = "scheduled", _("Scheduled")  # waiting for run_after (first run or a retry)
    QUEUED = "queued", _("Queued")  # ready to be claimed
    RUNNING = "running", _("Running")  # claimed by a worker that holds its lease
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")  # the dead letter: attempts spent or not retryable
    CANCELLED = "cancelled", _("Cancelled")


# Not started yet: waiting for dependencies, scheduled or queued (what a cancel stops at once,
# what a queue's MAX_QUEUED counts).
UNSTARTED_STATUSES = frozenset({JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED})
ACTIVE_STATUSES = UNSTARTED_STATUSES | {JobStatus.RUNNING}
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

TASK_RESULT_STATUS = {
    JobStatus.WAITING: TaskResultStatus.READY,
    JobStatus.SCHEDULED: TaskResultStatus.READY,
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.RUNNING: TaskResultStatus.RUNNING,
    JobStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
}


class AttemptOutcome(models.TextChoices):
    """How one execution of a job ended."""

    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    TIMED_OUT = "timed_out", _("Timed out")
    LOST = "lost", _("Lost")  # the worker died or shut down mid-attempt
    CANCELLED = "cancelled", _("Cancelled")


class JobQuerySet(models.QuerySet["Job"]):
    """Job queries named after states."""

    def ready(self) -> "JobQuerySet":
        """Jobs a worker may claim now (status queued)."""
        return self.filter(status=JobStatus.QUEUED)

    def scheduled(self) -> "JobQuerySet":
        """Jobs waiting for their ``run_after`` (a delayed first run or a retry)."""
        return self.filter(status=JobStatus.SCHEDULED)

    def due(self, now: datetime) -> "JobQuerySet":
        """Scheduled jobs whose ``run_after`` has come at ``now``."""
        return self.filter(status=JobStatus.SCHEDULED, run_after__lte=now)

    def waiting(self) -> "JobQuerySet":
        """Jobs held until the jobs they depend on have ended."""
        return self.filter(status=JobStatus.WAITING)

    def running(self) -> "JobQuerySet":
        """Jobs a worker holds."""
        return self.filter(status=JobStatus.RUNNING)

    def lease_expired(self, now: datetime) -> "JobQuerySet":
        """Running jobs whose worker stopped extending their lease before ``now``."""
        return self.filter(status=JobStatus.RUNNING, lease_expires_at__lt=now)

    def active(self) -> "JobQuerySet":
        """Jobs that have not reached a terminal status."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def finished(self) -> "JobQuerySet":
        """Jobs in a terminal status: succeeded, failed or cancelled."""
        return self.filter(status__in=TERMINAL_STATUSES)

    def dead_letter(self) -> "JobQuerySet":
        """Failed jobs: attempts exhausted, or failed with a non-retryable error."""
        return self.filter(status=JobStatus.FAILED)

    def in_queues(self, queues: list[str] | None) -> "JobQuerySet":
        """Jobs in any of ``queues`` (all jobs when ``queues`` is None)."""
        return self if queues is None else self.filter(queue_name__in=queues)


class Job(models.Model):
    """One enqueued call of a task, and everything known about its execution.

    The primary key is a random UUID: it is the ``TaskResult`` id and the id clients poll,
    so it must not be guessable.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    backend = models.CharField(max_length=100, default="default")
    task_path = models.CharField(_("task"), max_length=255)
    args = StoredJSONField(default=list, blank=True)
    kwargs = StoredJSONField(default=dict, blank=True)
    queue_name = models.CharField(_("queue"), max_length=100, default="default")
    priority = models.SmallIntegerField(
        default=0,
        validators=[MinValueValidator(TASK_MIN_PRIORITY), MaxValueValidator(TASK_MAX_PRIORITY)],
        help_text=_("-100..100; higher runs first."),
    )
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)

    enqueued_at = models.DateTimeField()
    run_after = models.DateTimeField(help_text=_("The earliest time the next attempt may start."))
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Retry policy, copied from the task, queue and global settings at enqueue.
    attempts = models.PositiveIntegerField(default=0, help_text=_("Attempts started so far."))
    max_attempts = models.PositiveIntegerField(default=1)
    free_attempts = models.PositiveIntegerField(
        default=0,
        help_text=_(
            "Attempts that do not count against max_attempts: those before a manual retry and "
            "those released by a worker shutting down."
        ),
    )
    backoff = models.JSONField(default=dict, blank=True)
    retry_on = models.JSONField(default=list, blank=True)
    fail_on = models.JSONField(default=list, blank=True)
    timeout = models.DurationField(null=True, blank=True)

    return_value = StoredJSONField(null=True, blank=True)
    # The error of the latest failed attempt, kept on the job for the dead-letter views.
    last_error_class = models.CharField(max_length=255, blank=True, default="")
    last_error_message = models.TextField(blank=True, default="")
    progress = StoredJSONField(null=True, blank=True)
    # What .using() changed on the task (see asyncjobs.overrides); null for most jobs.
    task_overrides = models.JSONField(null=True, blank=True, editable=False)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    # Who the job was enqueued for (read access through the API), where to report its end,
    # and the key that makes a second enqueue return this job instead of a new one.
    enqueued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,  # deleting a user must not touch the hot jobs table
        db_index=False,  # the partial index below: most jobs have no user
    )
    webhook_url = models.URLField(max_length=2000, blank=True)
    # The batch the job belongs to, if any (see asyncjobs.models.workflows). No database
    # constraint and no index of Django's own: adding the column to a live table stays
    # instant, and the partial index below is built without blocking writes.
    batch = models.ForeignKey(
        "asyncjobs.Batch",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="jobs",
    )
    # Dependencies (asyncjobs.services.dependencies). On a job others depend on: True once
    # a dependent was added, so that only such jobs look for dependents when they end. On a
    # dependent: how many of its dependencies have not ended yet (it waits while some have
    # not). NULL for every other job: adding the columns to a live table is instant (a plain
    # integer: PositiveIntegerField's CHECK would make PostgreSQL scan the table under its
    # lock, and MariaDB copy it).
    has_dependents = models.BooleanField(null=True, blank=True, editable=False)
    pending_dependencies = models.IntegerField(null=True, blank=True, editable=False)
    # NULL, not "", for "no key": NULLs never collide in the unique constraint below.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # How long a succeeded job keeps its unique_key (None: released when the job ends).
    unique_for = models.DurationField(null=True, blank=True)

    # Per-task or per-key limits: jobs sharing a limit_key run at most limit_concurrency at a
    # time and start at most at limit_rate, cluster-wide. Empty key: no such limit.
    limit_key = models.CharField(max_length=255, blank=True, default="")
    limit_concurrency = models.PositiveIntegerField(null=True, blank=True)
    limit_rate = models.CharField(max_length=32, blank=True, default="")

    # The lease: the worker running the job and when it must have renewed it by.
    worker_id = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[JobQuerySet] = JobQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        indexes: ClassVar[list[models.Index]] = [
            # The claim query: ready jobs of some queues, best first. Partial, so its size is
            # the backlog, not the history.
            models.Index(
                fields=["queue_name", "-priority", "run_after", "enqueued_at"],
                name="asyncjobs_job_claim",
                condition=Q(status="queued", limit_key=""),
            ),
            # The claim of a worker that serves every queue: ready jobs best first, whatever
            # their queue (read from the index above, led by the queue, every ready job would
            # be sorted on each claim).
            models.Index(
                fields=["-priority", "run_after", "enqueued_at"],
                name="asyncjobs_job_claim_all",
                condition=Q(status="queued", limit_key=""),
            ),
            # Ready jobs under a per-task or per-key limit, claimed by the limited path.
            models.Index(
                fields=["queue_name", "-priority", "run_after", "enqueued_at"],
                name="asyncjobs_job_claim_keyed",
                condition=Q(status="queued") & ~Q(limit_key=""),
            ),
            # Promotion of due scheduled jobs; future jobs never touch the claim index.
            models.Index(
                fields=["run_after"],
                name="asyncjobs_job_scheduled",
                condition=Q(status="scheduled"),
            ),
            # The next scheduled job of one queue: an ordered walk of that queue's entries,
            # however many future jobs other queues hold, and whatever the statistics say.
            models.Index(
                fields=["queue_name", "run_after"],
                name="asyncjobs_job_scheduled_queue",
                condition=Q(status="scheduled"),
            ),
            # Lease renewal and rescue look at running jobs only.
            models.Index(
                fields=["lease_expires_at"],
                name="asyncjobs_job_running",
                condition=Q(status="running"),
            ),
            # Finished jobs by status and age (pruning, last hour's throughput), and jobs of
            # any status (the dashboard's counts of waiting, scheduled, queued and running
            # jobs, the admin's and the API's status filters): full, unlike the ones above.
            models.Index(fields=["status", "finished_at"], name="asyncjobs_job_status_finished"),
            # The dead letter, grouped by task and error.
            models.Index(
                fields=["task_path", "last_error_class", "-finished_at"],
                name="asyncjobs_job_dead_letter",
                condition=Q(status="failed"),
            ),
            # The admin's newest-first job list.
            models.Index(fields=["-enqueued_at"], name="asyncjobs_job_enqueued"),
            # A batch's jobs, by status (the batch pages, retrying its failed jobs).
            models.Index(
                fields=["batch", "status"],
                name="asyncjobs_job_batch",
                condition=Q(batch__isnull=False),
            ),
            # A user's jobs, for deleting the user (SET_NULL). Partial: a job enqueued outside
            # a request (most of them) has none, and a full index took an entry for each
            # version of each job's row (every status change is a new one).
            models.Index(
                fields=["enqueued_by"],
                name="asyncjobs_job_enqueued_by",
                condition=Q(enqueued_by__isnull=False),
            ),
        ]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.CheckConstraint(
                condition=Q(priority__gte=TASK_MIN_PRIORITY, priority__lte=TASK_MAX_PRIORITY),
                name="asyncjobs_job_priority_range",
            ),
            models.CheckConstraint(
                condition=Q(status__in=JobStatus.values), name="asyncjobs_job_status_valid"
            ),
            # Idempotency: one job per key, enforced by the database under concurrency.
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=Q(unique_key__isnull=False),
                name="asyncjobs_job_unique_key",
            ),
        ]
        permissions = (
            ("retry_job", "Can retry failed or cancelled jobs"),
            ("cancel_job", "Can cancel jobs"),
            ("run_job_now", "Can run scheduled jobs now"),
        )

    def __str__(self) -> str:
        return f"{self.task_path} [{self.status}] {self.id}"

    @property
    def task_result_status(self) -> TaskResultStatus:
        """This job's status in ``django.tasks`` terms."""
        # (A status as read is text, a member of JobStatus (a str enum) equal to it and of the
        # same hash, so the text finds it without JobStatus(...), a costlier call.)
        try:
            return TASK_RESULT_STATUS[self.status]  # type: ignore[index]
        except KeyError:
            return TASK_RESULT_STATUS[JobStatus(self.status)]  # (ValueError, as before)

    @property
    def is_finished(self) -> bool:
        """Whether the job reached a terminal status."""
        return self.status in TERMINAL_STATUSES

    @property
    def attempts_left(self) -> int:
        """How many more attempts the retry policy allows."""
        return max(self.max_attempts - (self.attempts - self.free_attempts), 0)

    @property
    def duration(self) -> timedelta | None:
        """Time from the first start to the end, for finished jobs."""
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Attempt(models.Model):
    """One execution of a job: who ran it, when, and how it ended."""

    # No index of its own: the unique (job, number) one leads with the job, and serves the
    # foreign key's checks and cascades (and is the one MariaDB/MySQL use for it).
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="attempt_set", db_index=False
    )
    number = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices, blank=True)
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = _("attempt")
        verbose_name_plural = _("attempts")
        ordering = ("job", "number")
        # Recent attempts, for metrics. Partial: an attempt has no end while it runs, and a
        # full index took an entry for that too.
        indexes: ClassVar[list[models.Index]] = [
            models.Index(
                fields=["finished_at"],
                name="asyncjobs_attempt_ended",
                condition=Q(finished_at__isnull=False),
            ),
        ]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["job", "number"], name="asyncjobs_attempt_job_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.job_id} [{self.outcome or 'running'}]"

    @property
    def duration(self) -> timedelta | None:
        """How long the attempt ran (None while it runs)."""
        return self.finished_at - self.started_at if self.finished_at else None


class Dashboard(Job):
    """A proxy whose admin entry is the live dashboard (so it is listed on the admin index)."""

    class Meta:
        proxy = True
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboard")
