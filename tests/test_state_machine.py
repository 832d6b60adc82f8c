"""Property-based test of the job state machine (hypothesis): random sequences of enqueue,
claim, succeed, fail, cancel, retry, promotion and lease expiry with rescue never produce an
illegal state, a job in two states, or a lost attempt."""

import contextlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from asyncjobs import db, services
from asyncjobs.exceptions import InvalidTransitionError
from asyncjobs.models import Attempt, AttemptOutcome, Job, JobStatus
from tests import tasks

LEASE = timedelta(seconds=30)
WORKERS = ("w1", "w2")


class Rollback(Exception):
    pass


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.strategy = db.for_alias("default")
        self.held: dict[str, Job] = {}  # job id -> the claimed instance its worker holds
        # Claims whose lease expired and whose job was rescued: the worker may still try to
        # write its outcome, and must be refused.
        self.stale: list[Job] = []
        self.enqueued = 0

    def _held_ids(self) -> list[str]:
        return sorted(self.held, key=lambda pk: self.held[pk].enqueued_at)

    def teardown(self) -> None:
        self.atomic.__exit__(Rollback, Rollback(), None)

    @rule(delay=st.sampled_from([0, 0, 5, 60]), max_attempts=st.integers(1, 3))
    def enqueue(self, delay, max_attempts):
        # Distinct, increasing enqueue times: every ordering (claims, the draws below) is then
        # a function of the steps alone, never of the random job ids, so hypothesis can
        # replay and shrink a failing sequence.
        self.enqueued += 1
        stamp = self.now - timedelta(milliseconds=100) + timedelta(microseconds=self.enqueued)
        task = tasks.add.using(max_attempts=max_attempts)
        job = services.build_job(
            task_path=task.module_path,
            args=[1, 2],
            kwargs={},
            queue_name="default",
            priority=0,
            run_after=self.now + timedelta(seconds=delay) if delay else None,
            backend="default",
            options=services.JobOptions(
                max_attempts=max_attempts,
                backoff=services.retry.Fixed(timedelta(seconds=1)),
                retry_on=("builtins.Exception",),
                fail_on=(),
                timeout=None,
            ),
            now=stamp,
        )
        services.enqueue_jobs([job], using="default", now=stamp)

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim(self, worker, limit):
        for job in self.strategy.claim(
            queues=None, limit=limit, worker_id=worker, now=self.now, lease=LEASE
        ):
            assert str(job.pk) not in self.held, "a job claimed twice"
            self.held[str(job.pk)] = job

    @precondition(lambda self: self.held)
    @rule(data=st.data(), batched=st.booleans())
    def succeed(self, data, batched):
        """One job's success, alone or as the worker's batched completion records it."""
        job = self.held.pop(data.draw(st.sampled_from(self._held_ids())))
        assert self._succeed(job, batched)

    def _succeed(self, job: Job, batched: bool) -> bool:
        if batched:
            success = services.Success(job, 3, self.now)
            return job.pk in services.record_successes(
                [success], worker_id=job.worker_id, using="default"
            )
        return services.record_success(job, worker_id=job.worker_id, return_value=3, now=self.now)

    @precondition(lambda self: self.stale)
    @rule(succeeded=st.booleans(), batched=st.booleans())
    def late_write_is_refused(self, succeeded, batched):
        job = self.stale.pop()
        if succeeded:
            written = self._succeed(job, batched)
        else:
            written = services.record_failure(
                job, worker_id=job.worker_id, error=ValueError("late"), now=self.now
            )
        assert not written

    @precondition(lambda self: self.held)
    @rule(data=st.data(), cancelled=st.booleans())
    def fail(self, data, cancelled):
        job = self.held.pop(data.draw(st.sampled_from(self._held_ids())))
        assert services.record_failure(
            job,
            worker_id=job.worker_id,
            error=ValueError("boom"),
            now=self.now,
            outcome=AttemptOutcome.CANCELLED if cancelled else AttemptOutcome.FAILED,
        )

    @rule(data=st.data())
    def cancel(self, data):
        ids = list(Job.objects.order_by("enqueued_at").values_list("pk", flat=True))
        if ids:
            with contextlib.suppress(InvalidTransitionError):
                services.cancel_job(data.draw(st.sampled_from(ids)), now=self.now)

    @rule(data=st.data())
    def retry(self, data):
        ids = list(Job.objects.order_by("enqueued_at").values_list("pk", flat=True))
        if ids:
            with contextlib.suppress(InvalidTransitionError):
                services.retry_job(data.draw(st.sampled_from(ids)), now=self.now)

    @rule(seconds=st.sampled_from([1, 5, 31, 120]))
    def time_passes(self, seconds):
        self.now += timedelta(seconds=seconds)
        services.promote_due(now=self.now)
        services.rescue_expired(now=self.now)
        for job_id, job in list(self.held.items()):
            current = Job.objects.get(pk=job_id)
            if current.status != JobStatus.RUNNING or current.attempts != job.attempts:
                self.stale.append(self.held.pop(job_id))

    @invariant()
    def states_are_consistent(self):
        for job in Job.objects.all():
            open_attempts = list(job.attempt_set.filter(finished_at__isnull=True))
            assert job.status in JobStatus.values
            assert job.attempt_set.count() == job.attempts, "an attempt row per attempt"
            if job.status == JobStatus.RUNNING:
                assert job.worker_id and job.lease_expires_at is not None
                assert len(open_attempts) == 1 and open_attempts[0].number == job.attempts
            else:
                assert not job.worker_id and job.lease_expires_at is None
                assert open_attempts == [], "an attempt left open on a job not running"
            if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
                assert job.finished_at is not None
            else:
                assert job.finished_at is None
            if job.status == JobStatus.SUCCEEDED:
                assert job.attempt_set.filter(outcome=AttemptOutcome.SUCCEEDED).exists()
            assert job.attempts - job.free_attempts <= job.max_attempts
        numbers = list(Attempt.objects.values_list("job_id", "number"))
        assert len(numbers) == len(set(numbers))


def run_state_machine(examples):
    JobLifecycle.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("HYPOTHESIS_RANDOM") != "1",
    )
    JobLifecycle.TestCase().runTest()


@pytest.mark.django_db
def test_job_state_machine_in_brief():
    """A few sequences, for ``make test-fast``; the full run below is marked slow."""
    run_state_machine(4)


@pytest.mark.django_db
@pytest.mark.slow
def test_job_state_machine():
    run_state_machine(40)
