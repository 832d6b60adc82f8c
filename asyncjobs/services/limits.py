"""Claims under limits: a queue's ``RATE_LIMIT`` and ``CONCURRENCY``, and per-task or per-key
limits (``limit_key``), held cluster-wide under row locks, with start slots for rate limits."""

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Min

from asyncjobs import db
from asyncjobs.conf import jobs_settings, rate_parts
from asyncjobs.models import Job, LimitState, QueueState

# Rate limits are kept where the remote service counts: at the task's start, not at the
# claim. A claim gives each rate-limited job a start slot (wall clock), at least
# START_HANDOFF after the claim (time for the worker to hand the job to an idle slot thread)
# and at most START_LEAD after it (a claim may take a slot that soon, so that back-to-back
# claims keep the slots contiguous). The slot thread starts the task at its slot, never
# before, and gives the job back unstarted if it reached the slot later than
# START_TOLERANCE. Slots are spaced (period + START_ALLOWANCE) / N: N + 1 consecutive starts
# then span at least the period as long as each begins within START_ALLOWANCE of its slot,
# which leaves START_ALLOWANCE - START_TOLERANCE for the step from the slot thread's last look
# at the clock to the task's first line (a few Python calls). The tolerance is what a loaded
# machine needs: a thread waking for its slot was seen 15-100 ms late at a load of 5-10 on 2
# cores, and each job given back wastes its key's slot (a 15 ms tolerance gave back most of
# them there). The cost is the ceiling: at most 1 / 1.1 of a 10/s rate.
START_HANDOFF = timedelta(milliseconds=20)
START_LEAD = timedelta(milliseconds=100)
START_TOLERANCE = timedelta(milliseconds=80)
START_ALLOWANCE = timedelta(milliseconds=100)


def start_spacing(rate: str | None) -> timedelta | None:
    """The time between start slots for a rate limit such as ``"10/s"`` (None for None):
    ``(period + START_ALLOWANCE) / N``, so that no window of one period holds more than N
    starts made within ``START_ALLOWANCE`` of their slots."""
    parts = rate_parts(rate)
    if parts is None:
        return None
    count, period = parts
    return (period + START_ALLOWANCE) / count


def start_slot(next_at: datetime | None, *, now: datetime) -> datetime | None:
    """The start slot a claim at ``now`` may give a job under a rate limit whose next slot is
    ``next_at`` (None: never used), or None if that slot is more than ``START_LEAD`` away."""
    if next_at is not None and next_at > now + START_LEAD:
        return None
    return max(next_at or now, now + START_HANDOFF)


@dataclass
class LimitedClaim:
    """What a claim under limits took: the jobs, the start slot of each job under a rate
    limit (by primary key; the slot thread must not start it before, nor much after), and
    when a rate limit may let the next claim take more (``retry_at``, not before the claim),
    or None when nothing more is expected from the rate limit; ``held_back``: whether ready
    jobs under a rate limit were left because the claim was for no idle slot thread."""

    jobs: list[Job] = dataclasses.field(default_factory=list)
    start_at: dict[uuid.UUID, datetime] = dataclasses.field(default_factory=dict)
    retry_at: datetime | None = None
    held_back: bool = False


def queue_limits(queue: str) -> tuple[timedelta | None, int | None]:
    """A queue's rate limit, as the time between its start slots (``start_spacing``), and its
    concurrency limit."""
    spacing = start_spacing(jobs_settings.queue_option(queue, "RATE_LIMIT"))
    concurrency = jobs_settings.queue_option(queue, "CONCURRENCY")
    return spacing, concurrency


def claim_limited(
    claim: Callable[[int, datetime, datetime | None], LimitedClaim],
    *,
    queue: str,
    limit: int,
    clock: Callable[[], datetime],
    using: str = "default",
) -> LimitedClaim:
    """Claim from a queue with a ``RATE_LIMIT`` and/or ``CONCURRENCY``, cluster-wide.

    Holds the queue's row lock while it counts and claims, so concurrent workers take turns
    and the limits hold exactly. ``claim(limit, now, start_at)`` claims up to ``limit`` ready
    jobs of the queue at ``now``, to start at ``start_at`` (None without a rate limit);
    ``clock()`` is read after the lock is taken, so start times are those of the actual
    claims. Under a rate limit a claim takes one job, with the next start slot (see
    ``START_LEAD``): a GCRA with a burst of one whose slots are ``start_spacing`` apart. The
    caller must start the job at its slot and give it back if it cannot (see
    ``START_TOLERANCE``); then no window of one period holds more than N starts. Running jobs
    of a dead worker keep their concurrency slot until their lease expires and they are
    rescued.

    ``retry_at`` is when to claim again: in the future when the rate limit holds ready jobs
    back, not before now right after a claim (more may wait), and None when nothing was
    claimed for want of ready jobs (an idle queue must not make its worker poll faster than
    its poll interval).
    """
    spacing, concurrency = queue_limits(queue)
    with transaction.atomic(using=using):
        QueueState.objects.using(using).get_or_create(name=queue, defaults={"changed_at": clock()})
        state = QueueState.objects.using(using).select_for_update().get(name=queue)
        now = clock()
        allowance = limit
        if concurrency is not None:
            running = Job.objects.using(using).running().filter(queue_name=queue).count()
            allowance = min(allowance, concurrency - running)
        slot = None
        if spacing is not None:
            slot = start_slot(state.rate_next_at, now=now)
            if slot is None:
                assert state.rate_next_at is not None  # (start_slot gives a slot without one)
                return LimitedClaim(retry_at=state.rate_next_at - START_LEAD)
            allowance = min(allowance, 1)
        if allowance <= 0:
            return LimitedClaim()
        claimed = claim(allowance, now, slot)
        if spacing is not None and slot is not None and claimed.jobs:
            state.rate_next_at = slot + spacing
            state.save(update_fields=["rate_next_at"])
            claimed.start_at.update(dict.fromkeys((job.pk for job in claimed.jobs), slot))
            claimed.retry_at = max(state.rate_next_at - START_LEAD, clock())
    return claimed


def keyed_waiting(*, queues: Sequence[str] | None, using: str = "default") -> set[str]:
    """The queues (of ``queues``) that hold ready jobs under a per-task or per-key limit."""
    keyed = db.ready_queues(using, plain=False)
    return keyed if queues is None else keyed & set(queues)


def claim_keyed(
    *,
    queue: str,
    limit: int,
    worker_id: str,
    clock: Callable[[], datetime],
    lease: timedelta,
    using: str = "default",
    candidates: int = 50,
    rated_limit: int | None = None,
    start_at: datetime | None = None,
) -> LimitedClaim:
    """Claim up to ``limit`` ready jobs of ``queue`` that are under a per-task or per-key
    limit, without breaking any: at most ``limit_concurrency`` running per key and starts at
    most at ``limit_rate`` per key, cluster-wide.

    Keys already at their limit are left out of the candidate query, so a saturated key never
    hides the jobs of free keys behind it. The limit rows of the candidate keys are locked (in
    key order, so claimers cannot deadlock) while the running jobs are counted and the chosen
    jobs are moved to running. ``clock()`` gives the time; it is read again once the locks
    are held, so start times are those of the actual claims.

    A job under a ``limit_rate`` gets a start slot, as in ``claim_limited`` (the key's slots
    are ``start_spacing`` apart), and at most ``rated_limit`` such jobs are taken (None: no
    cap beyond ``limit``). ``start_at``: the slot the queue's own rate limit gave this claim;
    a key's job is then taken only if the key allows a start at that slot, which it gets.
    ``retry_at``: when a key's rate limit may let a waiting job be claimed (None if no job
    waits for one, or ``rated_limit`` is 0).
    """
    jobs = Job.objects.using(using)
    now = clock()
    horizon = start_at if start_at is not None else now + START_LEAD
    with transaction.atomic(using=using):
        saturated = {
            row["limit_key"]
            for row in jobs.running()
            .exclude(limit_key="")
            .values("limit_key")
            .annotate(n=Count("pk"), cap=Min("limit_concurrency"))
            .order_by()
            if row["cap"] is not None and row["n"] >= row["cap"]
        }
        throttled: dict[str, datetime] = {
            key: at
            for key, at in LimitState.objects.using(using)
            .filter(rate_next_at__gt=horizon)
            .values_list("key", "rate_next_at")
            if at is not None
        }
        ready = jobs.ready().filter(queue_name=queue).exclude(limit_key="")
        retry_at: datetime | None = None
        held_back = False
        if rated_limit is not None and rated_limit <= 0:
            # No idle slot for a job under a rate: leave those, and say whether any waits
            # (a slot thread coming free then waits for them; see Slots.hold_for_timed).
            held_back = ready.exclude(limit_rate="").exists()
            ready = ready.filter(limit_rate="")
        elif throttled:
            # When a rate limit lets a waiting job of a throttled key be claimed: the worker
            # sleeps until then, not a whole poll interval (and not at all for idle keys).
            waiting = (
                ready.filter(limit_key__in=list(throttled))
                .values_list("limit_key", flat=True)
                .distinct()
                .order_by()
            )
            retry_at = min((throttled[key] - START_LEAD for key in waiting), default=None)
        pending = (
            ready.exclude(limit_key__in=saturated | set(throttled))
            .order_by("-priority", "run_after", "enqueued_at")
            .values_list("pk", "limit_key", "limit_concurrency", "limit_rate")[:candidates]
        )
        rows = list(pending)
        keys = sorted({key for _, key, _, _ in rows})
        if not keys:
            return LimitedClaim(retry_at=retry_at, held_back=held_back)
        for key in keys:
            LimitState.objects.using(using).get_or_create(key=key)
        states = {
            s.key: s
            for s in LimitState.objects.using(using)
            .select_for_update()
            .filter(key__in=keys)
            .order_by("key")
        }
        now = clock()
        running = dict(
            jobs.running()
            .filter(limit_key__in=keys)
            .values("limit_key")
            .annotate(n=Count("pk"))
            .values_list("limit_key", "n")
            .order_by()
        )
        chosen: list[uuid.UUID] = []
        rated: dict[uuid.UUID, tuple[str, timedelta]] = {}  # the chosen jobs under a rate
        next_at = {key: state.rate_next_at for key, state in states.items()}
        for pk, key, cap, rate in rows:
            if len(chosen) >= limit:
                break
            if cap is not None and running.get(key, 0) >= cap:
                continue
            if rate:
                if start_at is None:
                    slot = start_slot(next_at[key], now=now)
                elif (previous := next_at[key]) is None or previous <= start_at:
                    slot = start_at
                else:
                    slot = None
                if slot is None:
                    continue
                if rated_limit is not None and len(rated) >= rated_limit:
                    held_back = True  # the key could start one, but no slot thread is idle
                    continue
                spacing = start_spacing(rate) or timedelta(0)
                next_at[key] = slot + spacing
                rated[pk] = (key, spacing)
            running[key] = running.get(key, 0) + 1
            chosen.append(pk)
        if not chosen:
            return LimitedClaim(retry_at=retry_at, held_back=held_back)
        # queued -> running and the attempt rows: the plain claim's own statements.
        claimed = db.start_jobs(using, chosen, worker_id=worker_id, now=now, lease=lease)
        # The start slots, from the clock as it is now: the statements since the last reading
        # take time (tens of ms on a loaded machine), and a slot that has passed by the time a
        # slot thread gets its job is given back, wasting the key's turn. A later reading only
        # moves slots later, never closer together, and only jobs actually claimed take one.
        slots: dict[uuid.UUID, datetime] = {}
        if any(job.pk in rated for job in claimed):
            ready_at = clock()
            for job in claimed:
                if job.pk not in rated:
                    continue
                key, spacing = rated[job.pk]
                state = states[key]
                if start_at is None:
                    slot = max(state.rate_next_at or ready_at, ready_at + START_HANDOFF)
                else:
                    slot = start_at
                slots[job.pk] = slot
                state.rate_next_at = slot + spacing
                # (the key may have more jobs waiting: look again when its next slot nears)
                later = max(state.rate_next_at - START_LEAD, ready_at)
                retry_at = later if retry_at is None else min(retry_at, later)
            LimitState.objects.using(using).bulk_update(
                [states[key] for key in sorted({key for key, _ in rated.values()})],
                ["rate_next_at"],
            )
    return LimitedClaim(jobs=claimed, start_at=slots, retry_at=retry_at, held_back=held_back)
