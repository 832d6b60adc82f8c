"""The worker's row: its registration, which a retry after a lost answer does not turn into
a duplicate, and the heartbeat's count of the jobs it finished, a total that beats at once,
beats sent again and beats arriving late never inflate or lower."""

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs import services
from asyncjobs.models import Worker
from asyncjobs.worker.heartbeat import Heartbeat
from tests.conftest import one_slot, start_in_thread

pytestmark = pytest.mark.django_db(transaction=True)

LEASE = timedelta(seconds=60)


def register(worker_id="w"):
    services.register_worker(
        worker_id=worker_id, queues=["*"], concurrency=1, backend="default", now=timezone.now()
    )


def processed(worker_id="w"):
    return Worker.objects.get(pk=worker_id).jobs_processed


def test_a_registration_sent_again_finds_its_own_row():
    """The worker retries its registration after any database error, including one where
    the first try committed and only the answer was lost: no duplicate-key error for ever."""
    register()
    register()
    assert Worker.objects.filter(pk="w").count() == 1


def test_a_beat_sent_again_or_late_changes_nothing():
    """A beat whose answer was lost is sent again with the same total; an older beat may
    arrive after a newer one. Neither counts a job twice nor lowers the count."""
    register()
    beat = lambda finished: services.heartbeat(  # noqa: E731
        worker_id="w", now=timezone.now(), lease=LEASE, finished=finished
    )
    beat(5)
    beat(5)
    assert processed() == 5
    beat(3)
    assert processed() == 5
    beat(8)
    services.heartbeat(worker_id="w", now=timezone.now(), lease=LEASE)  # no count: kept
    assert processed() == 8


def test_two_threads_beating_at_once_count_each_finished_job_once(backend):
    """A stopping worker beats once more while its heartbeat thread may be beating: under
    PgBouncer a test once saw 793 jobs counted for 500 when both added the same jobs."""
    register()
    slots = one_slot(backend)
    heartbeat = Heartbeat(slots, worker_id="w", interval=timedelta(seconds=60), lease=LEASE)
    together = threading.Barrier(2, timeout=10)

    def beat_with_the_other():
        together.wait()
        heartbeat.beat()

    for _ in range(10):
        with slots.lock:
            slots.finished += 5  # jobs finished since the last beats
        first, second = start_in_thread(beat_with_the_other), start_in_thread(beat_with_the_other)
        first(), second()
        assert processed() == slots.finished
