"""GET /jobs/<id>/, the permission matrix, retry/cancel, list and stats."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs.models import Job, JobStatus
from asyncjobs.services import enqueued_by
from asyncjobs.tokens import make_token, status_url
from tests import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def owned_job(users):
    with enqueued_by(users["owner"]):
        result = tasks.fail_always.using(max_attempts=1).enqueue("secret failure")
    return Job.objects.get(pk=result.id)


def detail(job):
    return f"/jobs/{job.pk}/"


READERS = {"anonymous": 404, "other": 404, "owner": 200, "staff": 200, "operator": 200}


@pytest.mark.parametrize(("who", "expected"), READERS.items())
def test_read_permission_matrix(api, users, owned_job, who, expected):
    assert api(users[who]).get(detail(owned_job)).status_code == expected


@pytest.mark.parametrize("who", ["anonymous", "other"])
def test_token_opens_its_job_and_nothing_else(api, users, owned_job, who):
    other_job = Job.objects.get(pk=tasks.add.enqueue(1, 1).id)
    token = make_token(owned_job.pk)
    client = api(users[who])
    assert client.get(detail(owned_job), {"token": token}).status_code == 200
    assert client.get(detail(owned_job), HTTP_X_JOB_TOKEN=token).status_code == 200
    assert client.get(detail(other_job), {"token": token}).status_code == 404
    assert client.get(detail(owned_job), {"token": token + "x"}).status_code == 404
    assert client.get(f"/jobs/{owned_job.pk}/events/", {"token": "nope"}).status_code == 404


def test_a_status_token_reads_but_never_writes(api, users, owned_job, runner):
    """The token in a status URL is for polling: it does not retry, cancel, list or count."""
    runner().drain()
    token = make_token(owned_job.pk)
    client = api(None)
    assert client.get(detail(owned_job), {"token": token}).status_code == 200
    for action in ("retry", "cancel"):
        url = f"/jobs/{owned_job.pk}/{action}/?token={token}"
        assert client.post(url, HTTP_X_JOB_TOKEN=token).status_code == 403
    assert client.get("/jobs/", {"token": token}).status_code == 403
    assert client.get("/jobs/stats/", {"token": token}).status_code == 403
    assert Job.objects.get(pk=owned_job.pk).status == JobStatus.FAILED


def test_token_expires(api, owned_job, settings):
    token = make_token(owned_job.pk)
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "STATUS_TOKEN_MAX_AGE": -1}
    assert api(None).get(detail(owned_job), {"token": token}).status_code == 404


def test_status_url_helper(api, owned_job):
    url = status_url(owned_job.pk)
    assert url.startswith(f"/jobs/{owned_job.pk}/?token=")
    assert api(None).get(url).status_code == 200


# (A fixed unknown id: parameters must be the same in every pytest-xdist worker.)
UNKNOWN_ID = "0f5e7c1e-5b0d-4a8e-9d65-3f1f2d7c9a41"


@pytest.mark.parametrize("bad", ["not-a-uuid", UNKNOWN_ID, "1' OR 1=1", "%00"])
def test_unknown_or_malformed_ids_are_404(api, users, bad):
    assert api(users["staff"]).get(f"/jobs/{bad}/").status_code == 404


def test_detail_fields_for_a_failed_job(api, users, owned_job, runner):
    runner().drain()
    response = api(users["owner"]).get(detail(owned_job))
    data = response.json()
    assert data["status"] == "failed"
    assert data["attempts"] == 1 and data["max_attempts"] == 1
    assert data["last_error"] == {"error_class": "builtins.ValueError", "message": "secret failure"}
    assert data["result"] is None
    (attempt,) = data["history"]
    assert attempt["outcome"] == "failed" and attempt["traceback"] is None  # not staff
    assert "Retry-After" not in response
    assert "no-store" in response["Cache-Control"]
    staff = api(users["staff"]).get(detail(owned_job)).json()
    assert "ValueError: secret failure" in staff["history"][0]["traceback"]


def test_detail_of_jobs_in_flight_tells_when_to_poll(api, users, runner):
    queued = tasks.add.enqueue(1, 2)
    later = tasks.add.using(run_after=timezone.now() + timedelta(seconds=30)).enqueue(1, 2)
    client = api(users["staff"])
    response = client.get(f"/jobs/{queued.id}/")
    assert response.json()["status"] == "queued"
    assert response["Retry-After"] == "2"
    response = client.get(f"/jobs/{later.id}/")
    assert response.json()["next_attempt_at"] is not None
    assert 29 <= int(response["Retry-After"]) <= 30
    runner().drain()
    data = client.get(f"/jobs/{queued.id}/").json()
    assert (data["status"], data["result"]) == ("succeeded", 3)


def test_progress_is_reported(api, users, runner):
    result = tasks.with_context.enqueue(3)
    runner().drain()
    progress = api(users["staff"]).get(f"/jobs/{result.id}/").json()["progress"]
    assert progress == {"current": 3, "total": 3, "message": "step 3", "percent": 100.0}


def test_owner_is_recorded_by_the_middleware(client, users):
    """A view enqueueing under EnqueuedByMiddleware records request.user as the owner."""
    from django.urls import path

    client.force_login(users["owner"])
    response = client.post("/enqueue-for-me/")
    job = Job.objects.get(pk=response.json()["id"])
    assert job.enqueued_by_id == users["owner"].pk
    anonymous = type(client)().post("/enqueue-for-me/")
    assert Job.objects.get(pk=anonymous.json()["id"]).enqueued_by_id is None
    assert path  # the view lives in tests/urls.py


@pytest.mark.parametrize(
    ("who", "expected"),
    {"anonymous": 404, "other": 404, "owner": 403, "staff": 403, "operator": 200}.items(),
)
def test_retry_permission_matrix(api, users, owned_job, runner, who, expected):
    runner().drain()
    response = api(users[who]).post(f"/jobs/{owned_job.pk}/retry/")
    assert response.status_code == expected
    if expected == 200:
        assert response.json()["status"] == "queued"
        assert Job.objects.get(pk=owned_job.pk).status == JobStatus.QUEUED


def test_retry_of_a_queued_job_is_a_conflict(api, users):
    result = tasks.add.enqueue(1, 1)
    response = api(users["operator"]).post(f"/jobs/{result.id}/retry/")
    assert response.status_code == 409
    assert "only failed or cancelled" in response.json()["detail"]
    assert api(users["operator"]).post(f"/jobs/{uuid.uuid4()}/retry/").status_code == 404


@pytest.mark.parametrize(
    ("who", "expected"),
    {"anonymous": 404, "other": 404, "owner": 200, "staff": 403, "operator": 200}.items(),
)
def test_cancel_permission_matrix(api, users, owned_job, who, expected):
    response = api(users[who]).post(f"/jobs/{owned_job.pk}/cancel/")
    assert response.status_code == expected
    if expected == 200:
        assert response.json()["status"] == "cancelled"


def test_cancel_finished_job_is_a_conflict(api, users, runner):
    result = tasks.add.enqueue(1, 1)
    runner().drain()
    assert api(users["operator"]).post(f"/jobs/{result.id}/cancel/").status_code == 409


@pytest.mark.parametrize(
    ("who", "expected"),
    {"anonymous": 403, "other": 403, "owner": 403, "staff": 200, "operator": 200}.items(),
)
def test_list_and_stats_are_for_staff(api, users, owned_job, who, expected):
    client = api(users[who])
    assert client.get("/jobs/").status_code == expected
    assert client.get("/jobs/stats/").status_code == expected


def test_list_filters_and_paginates(api, users):
    for i in range(7):
        tasks.add.enqueue(i, i)
    tasks.send_welcome_email.enqueue(1)
    client = api(users["staff"])
    page = client.get("/jobs/", {"page_size": 5}).json()
    assert len(page["results"]) == 5 and page["next"]
    rest = client.get(page["next"]).json()
    assert len(rest["results"]) == 3 and rest["next"] is None
    emails = client.get("/jobs/", {"queue": "emails"}).json()["results"]
    assert [j["task"] for j in emails] == ["tests.tasks.send_welcome_email"]
    assert len(client.get("/jobs/", {"task": "tests.tasks.add"}).json()["results"]) == 7
    assert client.get("/jobs/", {"status": "queued"}).status_code == 200
    bad = client.get("/jobs/", {"status": "nonsense"})
    assert bad.status_code == 400 and "status" in bad.json()
    for name in ("queue", "task"):  # PostgreSQL cannot take NUL in a statement: a 400, not 500
        bad = client.get("/jobs/", {name: "a\x00b"})
        assert bad.status_code == 400 and name in bad.json()


def test_stats(api, users, runner, worker_row):

    now = timezone.now()
    tasks.add.using(run_after=now - timedelta(seconds=30)).enqueue(1, 1)
    tasks.add.using(run_after=now + timedelta(hours=1)).enqueue(1, 1)
    failed = tasks.fail_always.using(max_attempts=1, queue_name="low").enqueue()
    runner(queues=["low"]).drain()
    worker_row("w1")
    data = api(users["staff"]).get("/jobs/stats/").json()
    by_queue = {q["queue"]: q for q in data["queues"]}
    assert by_queue["default"]["queued"] == 1
    assert by_queue["default"]["scheduled"] == 1
    assert by_queue["default"]["lag_seconds"] >= 30
    assert by_queue["low"]["failed"] == 1
    assert Job.objects.get(pk=failed.id).status == JobStatus.FAILED
    assert [w["id"] for w in data["workers"]] == ["w1"]


def test_stats_list_every_configured_queue_as_the_dashboard_does(api, users, settings, client):
    """TASKS QUEUES, ASYNCJOBS QUEUES and queues holding jobs, with jobs or without; the
    dashboard and the stats read the same list (asyncjobs.monitoring.queue_snapshots)."""
    import re

    from django.contrib.auth.models import User

    tasks.add.using(queue_name="reports").enqueue(1, 1)
    api(users["staff"]).get("/jobs/stats/")  # the URLconf (and the demo's tasks) load first
    settings.TASKS = {"default": {**settings.TASKS["default"], "QUEUES": ["default", "emails"]}}
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "QUEUES": {"bulk": {"MAX_ATTEMPTS": 2}}}
    stats = api(users["staff"]).get("/jobs/stats/").json()
    names = [q["queue"] for q in stats["queues"]]
    assert names == ["bulk", "default", "emails", "reports"]
    assert {q["queue"]: q["queued"] for q in stats["queues"]}["reports"] == 1
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get("/admin/asyncjobs/dashboard/", {"fragment": 1}).content.decode()
    assert re.findall(r'data-queue="([^"]+)"', page) == names
