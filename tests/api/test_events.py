"""GET /jobs/<id>/events/: Server-Sent Events until the job ends."""

import time

import pytest

from asyncjobs.services import enqueued_by
from asyncjobs.tokens import make_token
from tests import tasks
from tests.api.sse import events, follow

pytestmark = pytest.mark.django_db(transaction=True)


def test_stream_follows_the_job_to_its_end(api, users, runner):
    result = tasks.with_context.enqueue(2)
    response = api(users["staff"]).get(f"/jobs/{result.id}/events/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert "no-store" in response["Cache-Control"]
    # The job runs once the stream's first event has been sent.
    seen = follow(response, lambda: runner().drain())
    assert seen[0][0] == "status" and '"status":"queued"' in seen[0][1].replace(" ", "")
    assert seen[-1][0] == "end"
    assert '"succeeded"' in seen[-1][1]


def test_stream_of_a_finished_job_ends_at_once(api, users, runner):
    result = tasks.add.enqueue(1, 1)
    runner().drain()
    assert [e for e, _ in events(api(users["staff"]).get(f"/jobs/{result.id}/events/"))] == ["end"]


def test_stream_closes_after_the_maximum_duration(api, users, settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "API_EVENTS_MAX_DURATION": 1}
    result = tasks.add.enqueue(1, 1)
    started = time.monotonic()
    seen = [e for e, _ in events(api(users["staff"]).get(f"/jobs/{result.id}/events/"))]
    assert seen == ["status", "timeout"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("who", "expected"), [("anonymous", 404), ("other", 404), ("owner", 200)])
def test_stream_permissions(api, users, runner, who, expected):
    with enqueued_by(users["owner"]):
        result = tasks.add.enqueue(1, 1)
    runner().drain()
    assert api(users[who]).get(f"/jobs/{result.id}/events/").status_code == expected
    token = make_token(result.id)
    assert api(None).get(f"/jobs/{result.id}/events/", {"token": token}).status_code == 200
