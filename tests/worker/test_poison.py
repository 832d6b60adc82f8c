"""Poison jobs: tasks that kill their worker, never return, or take memory without bound.

Each must end ``failed`` after its attempts while the workers go on running the other jobs.
The test plays the supervisor (systemd, Kubernetes): a worker process that exits is replaced.
Every wait is bounded.
"""

import time

import pytest

from asyncjobs.models import AttemptOutcome, Job, JobStatus
from tests import tasks
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TIMINGS = {"lease": 2, "heartbeat": 0.5, "maintenance": 0.5, "poll": 0.2}


class Supervisor:
    """Keeps ``count`` workers running, replacing any that exit, and notes their exit codes."""

    def __init__(self, start, count, *args):
        self.start, self.args = start, args
        self.workers = [start(*args, **TIMINGS) for _ in range(count)]
        self.exit_codes = []

    def tend(self):
        for worker in list(self.workers):
            code = worker.proc.poll()
            if code is not None:
                self.exit_codes.append(code)
                self.workers.remove(worker)
                self.workers.append(self.start(*self.args, **TIMINGS))
        assert len(self.exit_codes) < 20, f"workers keep dying: {self.exit_codes}"


def outcomes(result):
    return [
        (a.outcome, a.error_class.rsplit(".", 1)[-1])
        for a in Job.objects.get(pk=result.id).attempt_set.order_by("number")
    ]


@pytest.mark.parametrize(
    ("poison_task", "outcome", "error", "exit_code"),
    [
        (tasks.exit_process, AttemptOutcome.LOST, "WorkerLostError", 13),
        (tasks.busy_past_timeout, AttemptOutcome.TIMED_OUT, "JobTimeoutError", None),
        (tasks.allocate_forever, AttemptOutcome.FAILED, "WorkerMemoryError", 4),
    ],
    ids=["kills-its-process", "never-returns", "unbounded-memory"],
)
def test_poison_job_fails_after_its_attempts_and_the_workers_carry_on(
    worker_process, poison_task, outcome, error, exit_code
):
    poison = poison_task.enqueue("poison")
    good = [tasks.add.enqueue(i, i) for i in range(20)]
    # One slot per worker, so that nothing but the poison job shares its process's fate.
    supervisor = Supervisor(worker_process, 2, "--concurrency", "1", "--max-memory", "300")

    def settled():
        supervisor.tend()
        return Job.objects.get(pk=poison.id).status == JobStatus.FAILED and all(
            Job.objects.get(pk=r.id).status == JobStatus.SUCCEEDED for r in good
        )

    wait_until(settled, timeout=60, interval=0.1, message="poison failed, the others done")

    assert outcomes(poison) == [(outcome, error)] * 2
    if exit_code:  # a worker records the attempt before it exits: wait for the exit too
        wait_until(
            lambda: supervisor.tend() or exit_code in supervisor.exit_codes,
            timeout=30,
            interval=0.1,
            message=f"a worker exiting with {exit_code}",
        )
    assert set(supervisor.exit_codes) == ({exit_code} if exit_code else set())
    if error == "WorkerMemoryError":
        assert "MiB resident memory" in Job.objects.get(pk=poison.id).last_error_message

    # The workers running now (survivors and replacements) take new jobs at once.
    after = [tasks.add.enqueue(2, 3) for _ in range(4)]
    deadline = time.monotonic() + 20
    while any(Job.objects.get(pk=r.id).status != JobStatus.SUCCEEDED for r in after):
        supervisor.tend()
        assert time.monotonic() < deadline, "jobs enqueued after the poison did not run"
        time.sleep(0.05)
