"""Which jobs a worker claims, and how: the queues to claim from (its own, less the paused
ones), the queues and jobs under limits (claimed under their locks), and the start slots of
jobs under rate limits."""

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from asyncjobs import db, services
from asyncjobs.conf import jobs_settings
from asyncjobs.models import Job

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass
class Claim:
    """What one ``Claimer.claim`` took.

    ``jobs``: the claimed jobs (``running``, each with its attempt row); ``start_at``: the
    start slot of each job under a rate limit, by primary key (it must not start before, nor
    much after: see ``services.START_TOLERANCE``); ``retry_at``: when a rate limit may let a
    claim take more (None: nothing is expected from one); ``wants_idle_slot``: whether jobs
    under a rate limit were (or, on a queue's own rate limit, may have been) left for want of
    an idle slot thread.
    """

    jobs: list[Job] = field(default_factory=list)
    start_at: dict[Any, datetime] = field(default_factory=dict)
    retry_at: datetime | None = None
    wants_idle_slot: bool = False


class Claimer:
    """Claims ready jobs for one worker.

    Queues with a ``RATE_LIMIT`` or ``CONCURRENCY``, and jobs under per-task or per-key
    limits, go through the limited paths (``services.claim_limited``, ``claim_keyed``);
    every other ready job is claimed by the strategy's one statement. The paused queues
    and the queues holding jobs under limits are read from the database when a change is
    announced (``announced``; PostgreSQL), and otherwise on a timer: once per poll interval
    (jobs under limits: every quarter second where nothing is announced).

    Parameters:
        strategy: the database's claim strategy (``db.for_alias``).
        worker_id: the worker the jobs are claimed for.
        queues: the worker's queues (None: every queue).
        lease: how long a claimed job's lease lasts before the heartbeat renews it.
        poll_interval: seconds between re-reads of the paused queues.
        clock: gives the time of claims (default ``timezone.now``); ``claim`` may be given
            another for one claim.
    """

    def __init__(
        self,
        *,
        strategy: db.ClaimStrategy,
        worker_id: str,
        queues: Sequence[str] | None,
        lease: timedelta,
        poll_interval: float,
        clock: Clock = timezone.now,
    ) -> None:
        self.strategy = strategy
        self.alias = strategy.alias
        self.worker_id = worker_id
        self.queues = list(queues) if queues is not None else None
        self.lease = lease
        self.poll_interval = poll_interval
        self.clock = clock
        # Queues with a RATE_LIMIT or CONCURRENCY (claimed under their lock). A worker of
        # every queue takes them from the settings' QUEUES.
        served = jobs_settings.QUEUES if self.queues is None else self.queues
        self.limited = {q for q in served if any(services.queue_limits(q))}
        self.rated = {q for q in self.limited if services.queue_limits(q)[0] is not None}
        self.paused: set[str] = set()
        # Queues with ready jobs under per-task or per-key limits.
        self.keyed: set[str] = set()
        self._keyed_checked = self._paused_checked = -1e9
        self._keyed_every = poll_interval if strategy.announces else min(poll_interval, 0.25)
        # Announcements counted (by the listener thread) and seen (by the claims): a re-read
        # covers those counted before it began.
        self._keyed_announced = self._keyed_seen = 0
        self._queues_announced = self._queues_seen = 0
        # When the last claim's rate limits may let a claim take more (see Claim.retry_at).
        self.retry_at: datetime | None = None
        self.wants_idle_slot = False

    def announced(self, kinds: Collection[str]) -> None:
        """Note what the database announced (``db.notification_kind`` of each payload): the
        next claim re-reads the keyed queues after ``db.NOTIFY_KEYED``, the paused ones
        after ``db.NOTIFY_QUEUE``. Called by the listener thread alone."""
        if db.NOTIFY_KEYED in kinds:
            self._keyed_announced += 1
        if db.NOTIFY_QUEUE in kinds:
            self._queues_announced += 1

    def refresh(self) -> None:
        """Make the next claim re-read the paused and keyed queues (in-process runs, which
        must see every change at once)."""
        self._keyed_checked = self._paused_checked = -1e9

    def next_look(self) -> float:
        """Seconds until the claimer wants another claim: a rate limit's next start, and,
        where changes are announced, the next timed re-read of the paused and keyed queues
        (done when its time comes, so that a wake-up by a notification goes straight to the
        claim). ``inf`` if nothing is due."""
        until = [float("inf")]
        if self.retry_at is not None:
            until.append(max((self.retry_at - timezone.now()).total_seconds(), 0.0))
        if self.strategy.announces:
            clock = time.monotonic()
            until.append(max(self._paused_checked + self.poll_interval - clock, 0.0))
            until.append(max(self._keyed_checked + self._keyed_every - clock, 0.0))
        return min(until)

    def idle_slot_wanted(self, *, now: datetime | None = None) -> bool:
        """Whether a claim for an idle slot thread would take a job under a rate limit: the
        last claim left some for want of one, or a rate limit's next start has come near
        (``retry_at``) by ``now`` (default: the time now)."""
        retry_at = self.retry_at
        if self.wants_idle_slot or retry_at is None:
            return self.wants_idle_slot
        return retry_at <= (now or timezone.now())

    def claim(
        self,
        limit: int,
        *,
        idle: int | None = None,
        clock: Clock | None = None,
        on_timed: Callable[[list[Job], Mapping[Any, datetime]], object] | None = None,
        plain: bool = True,
    ) -> Claim:
        """Claim up to ``limit`` ready jobs.

        Parameters:
            limit: the most jobs to claim.
            idle: at most this many (default ``limit``) jobs under a rate limit, which are
                claimed only for idle slot threads, never ahead.
            clock: the time of this claim (default the claimer's); read again after each
                lock is taken, so that start times are those of the actual claims.
            on_timed: called with the jobs that got a start slot, and their slots, as soon
                as their claim commits (the rest of the claim must not make them late).
            plain: False to claim only from the queues and jobs under limits (a slot thread
                is held idle for a job under a rate limit while the buffer is full).
        """
        clock = clock or self.clock
        now = clock()
        queues = self.active_queues()
        keyed = self._keyed_queues(queues)
        special = sorted(({*queues} if queues is not None else keyed) & (self.limited | keyed))
        result = Claim()
        timed_left = limit if idle is None else min(idle, limit)
        left_for_idle = False  # jobs under a rate limit left for want of an idle slot thread
        for name in special:
            room = limit - len(result.jobs)
            if room <= 0:
                break
            if name in self.rated:
                if timed_left <= 0:
                    left_for_idle = True
                    continue
                room = min(room, timed_left)

            def claim(
                n: int,
                at: datetime,
                start_at: datetime | None,
                q: str = name,
                rated: int = timed_left,
            ) -> services.LimitedClaim:
                got = services.LimitedClaim()
                if q in keyed:
                    got = services.claim_keyed(
                        queue=q,
                        limit=n,
                        worker_id=self.worker_id,
                        clock=clock,
                        lease=self.lease,
                        using=self.alias,
                        rated_limit=rated,
                        start_at=start_at,
                    )
                if q in self.limited and len(got.jobs) < n:
                    got.jobs += self.strategy.claim(
                        queues=[q],
                        limit=n - len(got.jobs),
                        worker_id=self.worker_id,
                        now=at,
                        lease=self.lease,
                    )
                return got

            if name in self.limited:
                got = services.claim_limited(
                    claim, queue=name, limit=room, clock=clock, using=self.alias
                )
            else:
                got = claim(room, now, None)
            if got.retry_at is not None:
                result.retry_at = min(filter(None, [result.retry_at, got.retry_at]))
            left_for_idle = left_for_idle or got.held_back
            result.jobs += got.jobs
            timed_left -= len(got.start_at)
            result.start_at.update(got.start_at)
            if on_timed is not None and got.start_at:
                on_timed([job for job in got.jobs if job.pk in got.start_at], got.start_at)
        # Jobs were left for want of an idle slot thread: the next slot that comes free waits
        # for one claim round, for them (see ``Slots.hold_for_timed``).
        result.wants_idle_slot = left_for_idle
        self.retry_at, self.wants_idle_slot = result.retry_at, result.wants_idle_slot
        rest = queues if queues is None else [q for q in queues if q not in self.limited]
        if plain and (rest is None or rest) and len(result.jobs) < limit:
            result.jobs += self.strategy.claim(
                queues=rest,
                limit=limit - len(result.jobs),
                worker_id=self.worker_id,
                # A fresh reading: the queries above take time, and an attempt must not be
                # recorded as started before a job enqueued meanwhile.
                now=clock(),
                lease=self.lease,
            )
        return result

    def _keyed_queues(self, queues: list[str] | None) -> set[str]:
        """Queues holding ready jobs under per-task or per-key limits: re-read when such a
        job is announced (PostgreSQL), else at most every ``_keyed_every``."""
        announced = self._keyed_announced
        if (
            announced != self._keyed_seen
            or time.monotonic() - self._keyed_checked >= self._keyed_every
        ):
            self.keyed = services.keyed_waiting(queues=queues, using=self.alias)
            self._keyed_checked, self._keyed_seen = time.monotonic(), announced
        return self.keyed

    def active_queues(self) -> list[str] | None:
        """The queues to claim from: the worker's minus the paused ones, re-read when a pause
        or resume is announced (PostgreSQL), else at most once per poll interval (so a pause
        takes effect within one). None (every queue) unless some are paused or limited: then
        a worker of every queue names those holding ready jobs, so that the limited ones are
        claimed under their locks and the paused ones not at all."""
        announced = self._queues_announced
        if (
            announced != self._queues_seen
            or time.monotonic() - self._paused_checked >= self.poll_interval
        ):
            paused = services.paused_queues(using=self.alias)
            if paused != self.paused:
                logger.info(
                    "Worker %s: paused queues now %s",
                    self.worker_id,
                    ",".join(sorted(paused)) or "none",
                )
            self.paused, self._paused_checked = paused, time.monotonic()
            self._queues_seen = announced
        if self.queues is None:
            if not (self.paused or self.limited):
                return None
            return sorted(db.ready_queues(self.alias) - self.paused)
        if not self.paused:
            return self.queues
        return [q for q in self.queues if q not in self.paused]
