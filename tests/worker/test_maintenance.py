"""The maintenance thread: each service at its interval, the locked ones only under the
cluster-wide maintenance lock, one failing service never stopping the others, and a slow
round never delaying a heartbeat."""

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs import db, services
from asyncjobs.models import Worker
from asyncjobs.worker.heartbeat import Heartbeat
from asyncjobs.worker.maintenance import Done, Maintenance
from tests.conftest import in_thread, one_slot, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Counting:
    """A service that counts its runs (and may fail, or wait for ``release``)."""

    def __init__(self, name, *, locked, interval=0.05, again_after=None, fail=False):
        self.name = name
        self.locked = locked
        self.interval = timedelta(seconds=interval)
        self.again_after = again_after
        self.fail = fail
        self.runs = 0
        self.release: threading.Event | None = None

    def run(self, *, now):
        self.runs += 1
        if self.release is not None:
            self.release.wait(10)
        if self.fail:
            raise RuntimeError("broken service")
        return Done({self.name: 1}, again_after=self.again_after)


def test_a_round_runs_locked_services_only_in_the_lock_holder():
    strategy = db.for_alias("default")
    locked, everywhere = Counting("locked", locked=True), Counting("everywhere", locked=False)
    maintenance = Maintenance(strategy, [locked, everywhere], worker_id="w")
    with strategy.maintenance_lock(now=timezone.now()) as won:
        assert won
        shared = in_thread(lambda: maintenance.run_round(now=timezone.now()))
    if locked.runs:  # (an in-memory SQLite database: every worker may do maintenance)
        assert shared == {"locked": 1, "everywhere": 1}
    else:
        assert shared == {"everywhere": 1}
    assert in_thread(lambda: maintenance.run_round(now=timezone.now())) == {
        "locked": 1,
        "everywhere": 1,
    }


def test_the_thread_runs_each_service_when_due_and_survives_a_failing_one():
    strategy = db.for_alias("default")
    regular = Counting("regular", locked=True, interval=0.05)
    eager = Counting("eager", locked=False, interval=60, again_after=timedelta(seconds=0.02))
    broken = Counting("broken", locked=True, interval=0.05, fail=True)
    maintenance = Maintenance(strategy, [broken, regular, eager], worker_id="w")
    maintenance.start()
    try:
        wait_until(
            lambda: min(regular.runs, eager.runs, broken.runs) >= 3,
            message="three runs of each service",
        )
    finally:
        maintenance.stop()


def test_a_slow_maintenance_round_does_not_delay_the_heartbeat(settings, backend):
    """The Pruner of a large backlog may take a second per round: heartbeats go on
    meanwhile, on a thread of their own."""
    strategy = db.for_alias("default")
    now = timezone.now()
    services.register_worker(
        worker_id="w", queues=["*"], concurrency=1, backend="default", now=now, using="default"
    )
    slow = Counting("slow", locked=True, interval=0.01)
    slow.release = threading.Event()
    maintenance = Maintenance(strategy, [slow], worker_id="w")
    slots = one_slot(backend)
    heartbeat = Heartbeat(
        slots, worker_id="w", interval=timedelta(seconds=0.05), lease=timedelta(seconds=60)
    )
    maintenance.start()
    try:
        wait_until(lambda: slow.runs == 1, message="the slow round to begin")
        before = Worker.objects.get(pk="w").last_heartbeat_at
        heartbeat.start()
        wait_until(
            lambda: Worker.objects.get(pk="w").last_heartbeat_at > before,
            message="a heartbeat while the round runs",
        )
        assert slow.runs == 1 and not slow.release.is_set()
    finally:
        slow.release.set()
        heartbeat.stop()
        maintenance.stop()
