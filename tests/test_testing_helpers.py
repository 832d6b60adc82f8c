"""asyncjobs.testing: assertions on enqueued jobs, work_off, and RUN_INLINE."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from freezegun import freeze_time

from asyncjobs.models import Job, JobStatus
from asyncjobs.testing import assert_enqueued, assert_not_enqueued, enqueued_jobs, work_off
from tests import tasks
from tests.models import Execution

pytestmark = pytest.mark.django_db


def test_assert_enqueued_matches_task_args_kwargs_and_queue():
    tasks.add.enqueue(1, 2)
    tasks.add.enqueue(1, 2)
    tasks.record.enqueue(label="x")
    assert len(assert_enqueued(tasks.add, args=[1, 2], count=2)) == 2
    assert_enqueued("tests.tasks.record", kwargs={"label": "x"}, queue="default")
    assert_not_enqueued(tasks.add, args=[2, 1])
    assert_not_enqueued(tasks.noop)
    assert [j.task_path for j in enqueued_jobs()] == ["tests.tasks.add"] * 2 + [
        "tests.tasks.record"
    ]


def test_failed_assertions_say_what_was_enqueued():
    tasks.add.enqueue(1, 2)
    with pytest.raises(AssertionError, match=r"found 0.*tests.tasks.add\(args=\[1, 2\]"):
        assert_enqueued(tasks.add, args=[5, 5])
    with pytest.raises(AssertionError, match="Expected 3"):
        assert_enqueued(tasks.add, count=3)
    with pytest.raises(AssertionError, match="Expected no waiting job"):
        assert_not_enqueued(tasks.add)


def test_work_off_runs_jobs_and_counts_outcomes():
    tasks.add.enqueue(1, 2)
    tasks.fail_always.using(max_attempts=1).enqueue("no")
    tasks.flaky.enqueue("f", 1)  # fails once, retried at once (Fixed(0))
    done = work_off()
    assert done == type(done)(ran=4, succeeded=2, failed=1, retrying=0)
    assert not enqueued_jobs()


def test_work_off_with_time_advanced_runs_due_retries():
    with freeze_time("2026-01-01 12:00:00"):
        result = tasks.fail_always.enqueue("later")  # 3 attempts, 5 s apart
        assert work_off().retrying == 1
    assert Job.objects.get(pk=result.id).status == JobStatus.SCHEDULED
    with freeze_time("2026-01-01 12:00:06"):
        assert work_off().retrying == 1
    with freeze_time("2026-01-01 12:00:12"):
        assert work_off().failed == 1
    assert Job.objects.get(pk=result.id).attempts == 3


@pytest.mark.django_db(transaction=True)
def test_run_inline_runs_each_job_when_its_transaction_commits(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "RUN_INLINE": True}
    result = tasks.record.enqueue("autocommit")
    assert Job.objects.get(pk=result.id).status == JobStatus.SUCCEEDED
    with transaction.atomic():
        inside = tasks.record.enqueue("in a transaction")
        assert Job.objects.get(pk=inside.id).status == JobStatus.QUEUED  # not before commit
    assert Job.objects.get(pk=inside.id).status == JobStatus.SUCCEEDED
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = tasks.record.enqueue("rolled back")
        raise RuntimeError
    assert not Job.objects.filter(pk=rolled_back.id).exists()
    assert sorted(Execution.objects.values_list("label", flat=True)) == [
        "autocommit",
        "in a transaction",
    ]


@pytest.mark.django_db(transaction=True)
def test_run_inline_records_failures_and_schedules_retries(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "RUN_INLINE": True}
    result = tasks.fail_always.enqueue("inline")
    job = Job.objects.get(pk=result.id)
    assert job.status == JobStatus.SCHEDULED
    assert job.attempts == 1
    assert job.attempt_set.get().error_message == "inline"
    done = work_off(now=timezone.now() + timedelta(seconds=6))
    assert done.ran == 1
