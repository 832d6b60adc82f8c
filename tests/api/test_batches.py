"""GET /jobs/batches/<id>/ and its event stream: counts, percent, state, failures, links."""

import time
import uuid

import pytest
from django.db.models import F

from asyncjobs.api.serializers import FAILURES_SHOWN
from asyncjobs.models import Batch, JobStatus
from asyncjobs.tokens import batch_status_url, make_batch_token
from tests.api.sse import events, follow
from tests.batches import make_batch
from tests.security.test_throttling import close

pytestmark = pytest.mark.django_db

Q, R, S, F_, C = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


def url(batch, part=""):
    return f"/jobs/batches/{batch.pk}/{part}"


def test_a_running_batch_with_its_counts_percent_and_failures(api, users):
    batch = make_batch(statuses=[S, S, F_, C, R, Q, Q, Q], description="Import 2026-12")
    response = api(users["staff"]).get(url(batch))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(batch.pk)
    assert body["description"] == "Import 2026-12"
    assert body["state"] == "running"
    assert body["total"] == 8
    assert body["counts"] == {"pending": 4, "succeeded": 2, "failed": 1, "cancelled": 1}
    assert body["finished"] == 4 and body["percent"] == 50.0
    assert body["created_at"] and body["sealed_at"] and body["finished_at"] is None
    [failure] = body["failures"]["jobs"]
    assert body["failures"]["count"] == 1
    assert failure["error_class"] == "builtins.ValueError"
    assert failure["message"] == "row 2 is bad"
    assert failure["task"] == "tests.tasks.add" and failure["finished_at"]
    assert body["links"]["self"].endswith(url(batch))
    assert body["links"]["events"].endswith(url(batch, "events/"))
    assert response["Retry-After"] == "2"
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize(
    ("statuses", "state"),
    [([S, S], "succeeded"), ([S, F_], "failed"), ([S, C], "failed"), ([], "succeeded")],
)
def test_a_finished_batch_says_how_it_ended(api, users, statuses, state):
    batch = make_batch(statuses=statuses)
    response = api(users["staff"]).get(url(batch))
    body = response.json()
    assert body["state"] == state and body["percent"] == 100.0 and body["finished_at"]
    assert "Retry-After" not in response


def test_an_open_batch_is_open_until_sealed(api, users):
    batch = make_batch(statuses=[S, S], sealed=False)
    body = api(users["staff"]).get(url(batch)).json()
    assert body["state"] == "open" and body["sealed_at"] is None and body["percent"] == 100.0


def test_the_failures_listed_are_bounded_and_counted(api, users):
    batch = make_batch(statuses=[F_] * (FAILURES_SHOWN + 7) + [S])
    failures = api(users["staff"]).get(url(batch)).json()["failures"]
    assert failures["count"] == FAILURES_SHOWN + 7
    assert len(failures["jobs"]) == FAILURES_SHOWN
    times = [f["finished_at"] for f in failures["jobs"]]
    assert times == sorted(times)  # oldest failure first


def test_links_carry_the_token_of_the_request(api, users):
    batch = make_batch(statuses=[Q])
    status_url = batch_status_url(batch.pk)
    assert status_url == f"{url(batch)}?token={make_batch_token(batch.pk)}"
    body = api(None).get(status_url).json()
    assert body["links"]["events"].endswith(f"events/?token={make_batch_token(batch.pk)}")
    assert "token=" not in api(users["staff"]).get(url(batch)).json()["links"]["self"]


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        "1",
        "02CBB166-5ED2-4FE4-B1B9-93ADA8376B290",
        "%00",
        "x" * 5000,
        "ünïcode",
        "' OR 1=1 --",
    ],
)
def test_malformed_and_unknown_ids_are_404(api, users, bad):
    for who in ("staff", "anonymous"):
        for part in ("", "events/"):
            response = api(users[who]).get(f"/jobs/batches/{bad}/{part}")
            assert response.status_code == 404, (who, bad, part)
    assert api(users["staff"]).get(f"/jobs/batches/{uuid.uuid4()}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_stream_follows_the_batch_to_its_end(api, users):
    batch = make_batch(statuses=[R, Q])
    response = api(users["staff"]).get(url(batch, "events/"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"

    def finish():
        # One job, then the other, as the batch code records their ends.
        for _ in range(2):
            time.sleep(0.6)  # a poll interval apart: each change is its own event
            Batch.objects.filter(pk=batch.pk).update(
                pending=F("pending") - 1, succeeded=F("succeeded") + 1
            )

    seen = follow(response, finish)
    assert seen[0][0] == "status" and '"pending": 2' in seen[0][1]
    assert seen[-1][0] == "end" and '"state": "succeeded"' in seen[-1][1]
    assert '"percent": 100.0' in seen[-1][1]


def test_the_stream_of_a_finished_batch_ends_at_once(api, users):
    batch = make_batch(statuses=[S, F_])
    assert [e for e, _ in events(api(users["staff"]).get(url(batch, "events/")))] == ["end"]


def test_the_stream_closes_after_the_maximum_duration(api, users, settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "API_EVENTS_MAX_DURATION": 1}
    batch = make_batch(statuses=[Q])
    seen = [e for e, _ in events(api(users["staff"]).get(url(batch, "events/")))]
    assert seen == ["status", "timeout"]


def test_a_batch_deleted_under_the_stream_ends_it(api, users):
    batch = make_batch(statuses=[Q])
    response = api(users["staff"]).get(url(batch, "events/"))
    Batch.objects.filter(pk=batch.pk).delete()
    assert [e for e, _ in events(response)] == ["gone"]


def test_batch_streams_share_the_callers_stream_cap(api, users, settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "API_EVENTS_MAX_STREAMS": 1}
    batch = make_batch(statuses=[Q])
    client = api(users["staff"])
    first = client.get(url(batch, "events/"))
    second = client.get(url(batch, "events/"))
    close(second)
    assert second.status_code == 429
    assert "/jobs/batches/<id>/" in second.json()["detail"]
    close(first)
    again = client.get(url(batch, "events/"))  # the slot is free again
    assert again.status_code == 200
    close(again)


@pytest.mark.django_db(transaction=True)
def test_the_stream_follows_a_real_batch_worked_off_by_a_runner(api, users, runner):
    """The counters moved by the worker's own transitions (batched completions, a failure
    for good) drive the stream to its end, with the failure listed."""
    from asyncjobs import batch
    from tests import batch_tasks

    with batch(description="streamed") as b:
        b.enqueue_many([(batch_tasks.piece, [n], {}) for n in range(6)])
        b.enqueue(batch_tasks.broken, 99)
    response = api(users["staff"]).get(f"/jobs/batches/{b.id}/events/")
    seen = follow(response, lambda: runner().drain(), timeout=20)
    assert seen[0][0] == "status" and '"pending": 7' in seen[0][1]
    event, data = seen[-1]
    assert event == "end" and '"state": "failed"' in data
    assert '"succeeded": 6' in data and "piece 99 is broken" in data
