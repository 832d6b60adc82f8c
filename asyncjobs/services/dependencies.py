"""Dependencies between jobs: a job enqueued with ``depends_on`` waits (status ``waiting``)
until the jobs it depends on (its parents) have ended.

- Enqueue (``enqueue_dependents``): the parents are locked (``SELECT … FOR UPDATE``; SQLite
  has one writer) and must exist, so edges never form a cycle. A parent that already
  succeeded counts as done; one that already failed or was cancelled applies the edge's
  policy at once; the others get ``has_dependents`` set, in the same locked transaction.
- A parent's end (``job_ended``), in the transaction that records it: its open edges are
  resolved, each dependent's ``pending_dependencies`` goes down under the dependent's row
  lock (so that two parents ending at once on two workers cannot both miss the last one),
  and a dependent with none left becomes queued (or scheduled, if its ``run_after`` is still
  ahead), which wakes the workers as any ready job does. A parent that failed for good or
  was cancelled cancels its ``cancel``-policy dependents, and theirs in turn.
- Only jobs with ``has_dependents`` set look for edges, and the success path learns it from
  the statement that records the success: plain jobs pay nothing more.
- A parent retried out of the dead letter (``reopen``) reopens the dependents it cancelled,
  which wait for it again (and so do their own dependents, recursively).

A lock order keeps concurrent ends from deadlocking: a parent's row first (the end locks
it), then its dependents' rows in primary-key order, round after round of the cascade, and
the batch rows of the jobs it cancelled last (job rows before batch rows, on every path). An
enqueue locks its parents in key order; where it meets a cascade the other way round (it
depends on a job and on one waiting for it) the database breaks the deadlock and the enqueue
runs again (``services.deadlocks``).
"""

import dataclasses
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Value, When

from asyncjobs.exceptions import DependencyFailedError, JobNotFoundError
from asyncjobs.models import (
    TERMINAL_STATUSES,
    DependencyPolicy,
    Job,
    JobDependency,
    JobStatus,
)
from asyncjobs.services import batches
from asyncjobs.services.cancelling import CANCEL_FIELDS, mark_cancelled
from asyncjobs.services.enqueue import enqueue_jobs
from asyncjobs.services.policy import class_path
from asyncjobs.services.webhooks import schedule_webhook

DEPENDENCY_ERROR = class_path(DependencyFailedError)
FAILED_ENDS = (JobStatus.FAILED, JobStatus.CANCELLED)
# Rows per statement where a list of keys is bound.
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a new job waits for: the ids of its ``parents``, what it does if one of them
    fails for good or is cancelled (``on_failure``), and whether the return value of its
    one parent is prepended to its arguments when it is released (``pass_result``)."""

    parents: tuple[Any, ...]
    on_failure: str = DependencyPolicy.CANCEL
    pass_result: bool = False

    def __post_init__(self) -> None:
        # (frozen: set through object's own setattr) Ids as the primary keys read back.
        object.__setattr__(self, "parents", parse_ids(self.parents))
        if self.on_failure not in DependencyPolicy.values:
            raise ValueError(
                f"on_dependency_failure must be one of {DependencyPolicy.values}, "
                f"not {self.on_failure!r}."
            )
        if self.pass_result and len(self.parents) != 1:
            raise ValueError("pass_result needs exactly one job to depend on.")


def parent_id(value: Any) -> uuid.UUID:
    """A parent's id from a job id (``UUID`` or text), a ``TaskResult`` or a ``Job``.
    Raises ``JobNotFoundError`` for something that cannot be a job's id."""
    raw = getattr(value, "id", None) if not isinstance(value, str | uuid.UUID) else value
    if isinstance(value, Job):
        raw = value.pk
    try:
        return raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
    except (TypeError, ValueError, AttributeError):
        raise JobNotFoundError(f"{value!r} is not the id of a job to depend on.") from None


def _waiting_message(parent: Any, status: str) -> str:
    verb = "was cancelled" if status == JobStatus.CANCELLED else "failed"
    return f"dependency {parent} {verb}"


def enqueue_dependents(
    pairs: Sequence[tuple[Job, Requirement | None]],
    *,
    using: str,
    now: datetime,
    queues: Collection[str] | None = None,
) -> list[Job]:
    """Store built jobs, some of which depend on existing jobs, all or none, in one
    transaction (the caller's if there is one); returns what ``enqueue_jobs`` returns.

    Raises ``JobNotFoundError``, storing nothing, if a parent does not exist. A job whose
    parents have all succeeded is stored ready; one with a parent that already failed for
    good or was cancelled is stored cancelled under the ``cancel`` policy (its last error
    says which), else it ignores that parent.
    """
    with transaction.atomic(using=using):
        wanted = sorted({pk for _, need in pairs if need for pk in need.parents}, key=str)
        # Locked in key order (fewer deadlocks between enqueues sharing parents): a parent
        # ending now commits first and is seen ended, or waits for this transaction and
        # then finds the edges (and its has_dependents) this one adds.
        found = {
            pk: (status, value)
            for start in range(0, len(wanted), CHUNK)
            for pk, status, value in Job.objects.using(using)
            .filter(pk__in=wanted[start : start + CHUNK])
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "status", "return_value")
        }
        missing = [str(pk) for pk in wanted if pk not in found]
        if missing:
            raise JobNotFoundError(f"No job with id {', '.join(missing)} to depend on.")
        edges: list[tuple[Job, uuid.UUID, Requirement, str]] = []
        for job, need in pairs:
            if need is None:
                continue
            pending, cancelled_by = 0, None
            for pk in dict.fromkeys(need.parents):
                status, value = found[pk]
                outcome = status if status in TERMINAL_STATUSES else ""
                edges.append((job, pk, need, outcome))
                if not outcome:
                    pending += 1
                    continue
                if status in FAILED_ENDS and need.on_failure == DependencyPolicy.CANCEL:
                    cancelled_by = cancelled_by or (pk, status)
                if need.pass_result:
                    job.args = [value if status == JobStatus.SUCCEEDED else None, *job.args]
            job.pending_dependencies = pending
            if cancelled_by is not None:
                job.status, job.finished_at = JobStatus.CANCELLED, now
                job.last_error_class = DEPENDENCY_ERROR
                job.last_error_message = _waiting_message(*cancelled_by)
            elif pending:
                job.status = JobStatus.WAITING
        stored = enqueue_jobs([job for job, _ in pairs], using=using, now=now, queues=queues)
        kept = {id(job) for job in stored}
        JobDependency.objects.using(using).bulk_create(
            JobDependency(
                dependent_id=job.pk,
                parent_id=pk,
                on_failure=need.on_failure,
                pass_result=need.pass_result,
                created_at=now,
                resolved_at=now if outcome else None,
                outcome=outcome,
            )
            for job, pk, need, outcome in edges
            if id(job) in kept
        )
        # Every parent but a succeeded one may still end (again, if retried out of the dead
        # letter): it must look for its dependents when it does.
        flagged = {pk for job, pk, _, _ in edges if id(job) in kept}
        flagged = {pk for pk in flagged if found[pk][0] != JobStatus.SUCCEEDED}
        flagged_list = sorted(flagged, key=str)
        for start in range(0, len(flagged_list), CHUNK):
            Job.objects.using(using).filter(pk__in=flagged_list[start : start + CHUNK]).update(
                has_dependents=True
            )
        for job, _ in pairs:
            if id(job) in kept and job.status == JobStatus.CANCELLED:
                schedule_webhook(job, now=now, using=using)
    return stored


def job_ended(
    ended: Mapping[Any, str],
    *,
    using: str,
    now: datetime,
    values: Mapping[Any, Any] | None = None,
    known_parents: bool = False,
    batch_ends: Mapping[Any, batches.Ended] | None = None,
) -> None:
    """Resolve the edges of jobs that have just ended (``ended``: primary key → terminal
    status), in the transaction that recorded their end, which holds their rows' locks.

    ``values``: the return values of succeeded ones (for chains). Unless ``known_parents``
    (the caller read ``has_dependents`` under the lock already), the jobs without
    dependents are sorted out first, by one locking read. ``batch_ends``: the caller's own
    batch counts for the jobs that ended, moved (``batches.jobs_ended``) together with those
    of the dependents this cancels, once every job row is locked: job rows before batch
    rows, and the batch rows in the order of their ids, on every path."""
    moved: dict[Any, batches.Ended] = {
        batch_id: dataclasses.replace(counts) for batch_id, counts in (batch_ends or {}).items()
    }
    if ended:
        _cascade(ended, moved, using=using, now=now, values=values, known_parents=known_parents)
    if moved:
        batches.jobs_ended(moved, using=using, now=now)


def _cascade(
    ended: Mapping[Any, str],
    batch_ends: dict[Any, batches.Ended],
    *,
    using: str,
    now: datetime,
    values: Mapping[Any, Any] | None,
    known_parents: bool,
) -> None:
    """``job_ended``'s cascade, round after round; the batch ends of the jobs it cancels are
    counted into ``batch_ends``."""
    if not known_parents:
        with_dependents = set(
            Job.objects.using(using)
            .filter(pk__in=list(ended), has_dependents=True)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", flat=True)
        )
        ended = {pk: status for pk, status in ended.items() if pk in with_dependents}
    values = values or {}
    frontier = dict(ended)
    while frontier:
        frontier = _resolve(frontier, values, batch_ends, using=using, now=now)


def _resolve(
    ended: Mapping[Any, str],
    values: Mapping[Any, Any],
    batch_ends: dict[Any, batches.Ended],
    *,
    using: str,
    now: datetime,
) -> dict[Any, str]:
    """Resolve the open edges of the ``ended`` parents; returns the dependents this
    cancelled that have dependents of their own (the next round of the cascade). Done
    ``CHUNK`` parents and edges at a time (SQLite binds at most 32,766 values), edges in
    dependent order, so that dependents are still locked in key order."""
    parents = list(ended)
    edges: list[tuple[Any, ...]] = []
    for start in range(0, len(parents), CHUNK):
        edges += (
            JobDependency.objects.using(using)
            .filter(parent_id__in=parents[start : start + CHUNK], resolved_at__isnull=True)
            .select_for_update()
            .values_list("pk", "dependent_id", "parent_id", "on_failure", "pass_result")
        )
    edges.sort(key=lambda edge: (str(edge[1]), edge[0]))
    next_round: dict[Any, str] = {}
    for start in range(0, len(edges), CHUNK):
        next_round.update(
            _resolve_edges(edges[start : start + CHUNK], ended, values, batch_ends, using, now)
        )
    return next_round


def _resolve_edges(
    edges: list[tuple[Any, ...]],
    ended: Mapping[Any, str],
    values: Mapping[Any, Any],
    batch_ends: dict[Any, batches.Ended],
    using: str,
    now: datetime,
) -> dict[Any, str]:
    by_outcome: dict[str, list[Any]] = defaultdict(list)
    for pk, _, parent, _, _ in edges:
        by_outcome[ended[parent]].append(pk)
    for outcome, pks in by_outcome.items():
        JobDependency.objects.using(using).filter(pk__in=pks).update(
            resolved_at=now, outcome=outcome
        )
    dependents = {
        pk: (status, has_dependents)
        for pk, status, has_dependents in Job.objects.using(using)
        .filter(pk__in={dependent for _, dependent, *_ in edges})
        .order_by("pk")
        .select_for_update()
        .values_list("pk", "status", "has_dependents")
    }
    _shift_pending(Counter(dependent for _, dependent, *_ in edges), -1, using=using)
    cancel: dict[Any, tuple[Any, str]] = {}
    for _, dependent, parent, policy, pass_result in edges:
        status = ended[parent]
        if dependents.get(dependent, ("",))[0] != JobStatus.WAITING:
            continue  # cancelled by an operator meanwhile, or gone
        if status in FAILED_ENDS and policy == DependencyPolicy.CANCEL:
            cancel.setdefault(dependent, (parent, status))
        elif pass_result:
            _prepend(dependent, values.get(parent), using=using)
    cancelled = _cancel(cancel, batch_ends, using=using, now=now)
    release(set(dependents) - set(cancel), using=using, now=now)
    return {pk: JobStatus.CANCELLED for pk in cancelled if dependents[pk][1]}


def _shift_pending(counts: Counter[Any], sign: int, *, using: str) -> None:
    """Add ``sign`` times its count to each job's ``pending_dependencies`` (one statement per
    distinct count); the rows are locked by the caller."""
    by_count: dict[int, list[Any]] = defaultdict(list)
    for pk, count in counts.items():
        by_count[count].append(pk)
    for count, pks in by_count.items():
        Job.objects.using(using).filter(pk__in=pks).update(
            pending_dependencies=F("pending_dependencies") + sign * count
        )


def _prepend(pk: Any, value: Any, *, using: str) -> None:
    """Put the parent's return value first in a waiting dependent's arguments (chains)."""
    jobs = Job.objects.using(using).filter(pk=pk)
    # A locking read (the row is locked already): under REPEATABLE READ (MariaDB/MySQL's
    # default, if a project chooses it) a plain read could miss a row committed after this
    # transaction's first read.
    args = jobs.select_for_update().values_list("args", flat=True).first()
    jobs.update(args=[value, *(args or [])])


def _cancel(
    cancel: Mapping[Any, tuple[Any, str]],
    batch_ends: dict[Any, batches.Ended],
    *,
    using: str,
    now: datetime,
) -> list[Any]:
    """Cancel waiting dependents (locked by the caller), each saying which dependency ended
    it; returns those cancelled, counted into ``batch_ends`` for their batches."""
    by_parent: dict[tuple[Any, str], list[Any]] = defaultdict(list)
    for dependent, cause in cancel.items():
        by_parent[cause].append(dependent)
    for (parent, status), pks in by_parent.items():
        jobs = (
            Job.objects.using(using)
            .filter(pk__in=pks, status=JobStatus.WAITING)
            .order_by("pk")
            .only(*CANCEL_FIELDS)
        )
        mark_cancelled(
            list(jobs),
            batch_ends,
            using=using,
            now=now,
            last_error_class=DEPENDENCY_ERROR,
            last_error_message=_waiting_message(parent, status),
        )
    return list(cancel)


def release(pks: Iterable[Any], *, using: str, now: datetime) -> int:
    """waiting → queued (or scheduled, if ``run_after`` is still ahead) for those of the
    jobs ``pks`` that wait for nothing any more; their rows are locked by the caller."""
    pks = list(pks)
    if not pks:
        return 0
    return int(
        Job.objects.using(using)
        .filter(pk__in=pks, status=JobStatus.WAITING, pending_dependencies=0)
        .update(
            status=Case(
                When(run_after__gt=now, then=Value(JobStatus.SCHEDULED.value)),
                default=Value(JobStatus.QUEUED.value),
            )
        )
    )


def reopen(parents: Iterable[Any], *, using: str) -> int:
    """The ``parents`` were retried out of the dead letter (or after a cancel): the
    dependents they cancelled wait for them again, unless another failed dependency still
    holds them cancelled; and so, recursively, do those dependents' own dependents. A
    dependent cancelled by an operator stays cancelled. Run in the retry's transaction.
    Returns how many jobs wait again."""
    frontier = set(parents)
    reopened_total = 0
    while frontier:
        edges = list(
            JobDependency.objects.using(using)
            .filter(
                parent_id__in=list(frontier),
                on_failure=DependencyPolicy.CANCEL,
                outcome__in=FAILED_ENDS,
            )
            .select_for_update()
            .values_list("pk", "dependent_id")
        )
        if not edges:
            break
        dependents = {
            pk: (status, error, has_dependents)
            for pk, status, error, has_dependents in Job.objects.using(using)
            .filter(pk__in={dependent for _, dependent in edges})
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "status", "last_error_class", "has_dependents")
        }
        JobDependency.objects.using(using).filter(pk__in=[pk for pk, _ in edges]).update(
            resolved_at=None, outcome=""
        )
        _shift_pending(Counter(dependent for _, dependent in edges), 1, using=using)
        candidates = {
            pk
            for pk, (status, error, _) in dependents.items()
            if status == JobStatus.CANCELLED and error == DEPENDENCY_ERROR
        }
        still_blocked = set(
            JobDependency.objects.using(using)
            .filter(
                dependent_id__in=list(candidates),
                on_failure=DependencyPolicy.CANCEL,
                outcome__in=FAILED_ENDS,
            )
            .select_for_update()  # (locking: the latest rows, see _prepend)
            .values_list("dependent_id", flat=True)
        )
        reopened = candidates - still_blocked
        if reopened:
            back: dict[Any, batches.Ended] = {}
            for batch_id in (
                Job.objects.using(using)
                .filter(pk__in=reopened, status=JobStatus.CANCELLED, batch__isnull=False)
                .values_list("batch_id", flat=True)
            ):
                back.setdefault(batch_id, batches.Ended()).cancelled += 1
            if back:
                batches.jobs_reopened(back, using=using)
            Job.objects.using(using).filter(pk__in=reopened, status=JobStatus.CANCELLED).update(
                status=JobStatus.WAITING,
                finished_at=None,
                last_error_class="",
                last_error_message="",
            )
        reopened_total += len(reopened)
        frontier = {pk for pk in reopened if dependents[pk][2]}
    return reopened_total


def dependencies_of(job: Job, *, limit: int | None = None) -> tuple[list[JobDependency], int]:
    """The edges of ``job`` to the jobs it depends on, oldest first, with their parents
    (at most ``limit``), and how many there are (for the admin and the API)."""
    return _edges(JobDependency.objects.filter(dependent_id=job.pk), "parent", job, limit)


def dependents_of(job: Job, *, limit: int | None = None) -> tuple[list[JobDependency], int]:
    """The edges of the jobs that depend on ``job``, oldest first, with those jobs (at most
    ``limit``), and how many there are."""
    if not job.has_dependents and job.status != JobStatus.SUCCEEDED:
        return [], 0  # (a succeeded parent's flag is not set if it had succeeded first)
    return _edges(JobDependency.objects.filter(parent_id=job.pk), "dependent", job, limit)


def _edges(edges: Any, other: str, job: Job, limit: int | None) -> tuple[list[JobDependency], int]:
    edges = edges.using(job._state.db or "default").select_related(other).order_by("pk")
    shown = list(edges[:limit] if limit is not None else edges)
    total = len(shown) if limit is None or len(shown) < limit else edges.count()
    return shown, total


def run_now_refusal(job: Job) -> str | None:
    """Why an operator's "run now" may not release ``job`` (None if it may): a job waiting
    for its dependencies runs when they have ended, never before; cancel it, or retry or
    cancel what it waits for."""
    if job.status != JobStatus.WAITING:
        return None
    return (
        f"Job {job.pk} is waiting for {job.pending_dependencies or 0} job(s) it depends on; "
        "a waiting job runs only once its dependencies have ended (cancel it to drop it)."
    )


def parse_ids(values: Iterable[Any]) -> tuple[uuid.UUID, ...]:
    """``parent_id`` of each value, in order, without repeats."""
    return tuple(dict.fromkeys(parent_id(value) for value in values))


__all__ = [
    "DEPENDENCY_ERROR",
    "Requirement",
    "dependencies_of",
    "dependents_of",
    "enqueue_dependents",
    "job_ended",
    "parent_id",
    "parse_ids",
    "release",
    "reopen",
    "run_now_refusal",
]
