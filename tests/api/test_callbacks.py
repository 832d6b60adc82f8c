"""POST /jobs/: HTTP callback jobs against a real local HTTP server."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from asyncjobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db


def create(api, user, **body):
    return api(user).post("/jobs/", body, format="json")


def job_from(response):
    return Job.objects.get(pk=response.json()["id"])


def test_create_and_succeed(api, users, http_server, runner):
    response = create(
        api,
        users["client"],
        callback_url=f"{http_server.url}/ok",
        payload={"order": 42, "items": ["a", "b"]},
        headers={"X-Trace": "abc"},
        priority=5,
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["priority"] == 5
    assert body["status_url"].startswith("http://testserver/jobs/")
    assert response["Location"] == body["status_url"]
    job = job_from(response)
    assert job.enqueued_by_id == users["client"].pk
    assert job.max_attempts == 4  # retries=3 by default
    runner().drain()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.return_value["status"] == 200
    assert json.loads(job.return_value["body"]) == {"path": "/ok", "hits": 1}
    (request,) = http_server.requests
    assert request["method"] == "POST"
    assert json.loads(request["body"]) == {"order": 42, "items": ["a", "b"]}
    assert request["headers"]["X-Trace"] == "abc"
    assert request["headers"]["Host"] == http_server.url.removeprefix("http://")
    assert job.attempt_set.get().http_status == 200
    # The creator can poll with the token, anonymously.
    assert api(None).get(body["status_url"]).json()["status"] == "succeeded"


def test_5xx_is_retried_and_every_status_recorded(api, users, http_server, runner):
    response = create(
        api,
        users["client"],
        callback_url=f"{http_server.url}/flaky",
        backoff="fixed",
        backoff_seconds=0,
    )
    job = job_from(response)
    runner().drain()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert [a.http_status for a in job.attempt_set.all()] == [500, 200]
    assert job.attempt_set.first().error_class == "asyncjobs.outbound.RetryableHTTPError"


def test_persistent_500_ends_in_the_dead_letter(api, users, http_server, runner):
    response = create(
        api,
        users["client"],
        callback_url=f"{http_server.url}/fail",
        retries=2,
        backoff="fixed",
        backoff_seconds=0,
    )
    job = job_from(response)
    runner().drain()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert [a.http_status for a in job.attempt_set.all()] == [500, 500, 500]


def test_404_fails_at_once(api, users, http_server, runner):
    job = job_from(create(api, users["client"], callback_url=f"{http_server.url}/missing"))
    runner().drain()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    attempt = job.attempt_set.get()
    assert (attempt.http_status, attempt.error_class) == (
        404,
        "asyncjobs.outbound.PermanentHTTPError",
    )


def test_timeout_is_retried(api, users, http_server, runner):
    job = job_from(
        create(
            api,
            users["client"],
            callback_url=f"{http_server.url}/slow",
            retries=1,
            backoff="fixed",
            backoff_seconds=0,
        )
    )
    runner().drain()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    attempts = list(job.attempt_set.all())
    assert len(attempts) == 2
    assert {a.error_class for a in attempts} == {"asyncjobs.outbound.OutboundTimeoutError"}
    assert {a.http_status for a in attempts} == {None}


def test_429_retry_after_is_honoured(api, users, http_server, runner):
    job = job_from(create(api, users["client"], callback_url=f"{http_server.url}/throttled"))
    now = timezone.now()
    runner().run_once(now=now)
    job.refresh_from_db()
    assert job.status == JobStatus.SCHEDULED
    assert job.run_after == now + timedelta(seconds=7)
    assert job.attempt_set.get().http_status == 429


def test_delay_and_run_at(api, users, http_server):
    before = timezone.now()
    delayed = job_from(
        create(api, users["client"], callback_url=f"{http_server.url}/ok", delay=60_000)
    )
    assert delayed.status == JobStatus.SCHEDULED
    assert delayed.run_after >= before + timedelta(seconds=60)
    when = (timezone.now() + timedelta(hours=2)).isoformat()
    at = job_from(create(api, users["client"], callback_url=f"{http_server.url}/ok", run_at=when))
    assert at.status == JobStatus.SCHEDULED


def test_idempotency_key_returns_the_same_job(api, users, http_server):
    body = {"callback_url": f"{http_server.url}/ok", "idempotency_key": "order-42"}
    first = api(users["client"]).post("/jobs/", body, format="json")
    second = api(users["client"]).post("/jobs/", body, format="json")
    assert first.status_code == 202 and second.status_code == 200
    assert second["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    # Keys are per user.
    third = api(users["operator"]).post("/jobs/", body, format="json")
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]
    assert Job.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "callback_url"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"callback_url": "ftp://127.0.0.1/x"}, "callback_url"),
        ({"callback_url": "http://example.com/"}, "callback_url"),  # not on the allow-list
        ({"callback_url": "URL", "retries": -1}, "retries"),
        ({"callback_url": "URL", "retries": "many"}, "retries"),
        ({"callback_url": "URL", "method": "TRACE"}, "method"),
        ({"callback_url": "URL", "backoff": "linear"}, "backoff"),
        ({"callback_url": "URL", "priority": 1000}, "priority"),
        ({"callback_url": "URL", "delay": -5}, "delay"),
        ({"callback_url": "URL", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"callback_url": "URL", "queue": "nope"}, "queue"),
        ({"callback_url": "URL", "headers": {"Host": "evil"}}, "headers"),
        ({"callback_url": "URL", "headers": "x"}, "headers"),
        ({"callback_url": "URL", "headers": {"X-A": "one\r\nX-Injected: two"}}, "headers"),
        ({"callback_url": "URL", "headers": {"X-A": "snow \u2603"}}, "headers"),
        ({"callback_url": "URL", "headers": {"X-\u00e9": "v"}}, "headers"),
        ({"callback_url": "URL", "retries": "three"}, "retries"),
        ({"callback_url": "URL", "priority": [1]}, "priority"),
        ({"callback_url": ["URL"]}, "callback_url"),
        ({"callback_url": "URL", "webhook_url": "http://10.0.0.1/"}, "webhook_url"),
    ],
)
def test_invalid_bodies_get_400_with_field_errors(api, users, http_server, body, field):
    body = {k: (f"{http_server.url}/ok" if v == "URL" else v) for k, v in body.items()}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("who", "expected"),
    {"anonymous": 403, "other": 403, "staff": 403, "client": 202, "operator": 202}.items(),
)
def test_create_permission(api, users, http_server, who, expected):
    response = api(users[who]).post(
        "/jobs/", {"callback_url": f"{http_server.url}/ok"}, format="json"
    )
    assert response.status_code == expected


def test_non_json_body_is_400(api, users):
    response = api(users["client"]).post("/jobs/", "{not json", content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b"", b"null", b'"just a string"'],
    ids=["not-utf8", "nested-100000", "empty", "null", "string"],
)
def test_bad_json_bodies_are_400(api, users, raw):
    response = api(users["client"]).post("/jobs/", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()
    assert not Job.objects.exists()


def test_other_content_types_are_415(api, users, http_server):
    response = api(users["client"]).post("/jobs/", {"callback_url": f"{http_server.url}/ok"})
    assert response.status_code == 415


def test_payload_nesting_is_bounded(api, users, http_server, settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "API_MAX_JSON_DEPTH": 8}
    payload = {"a": [{"b": [1, {"c": "ok"}]}]}
    body = {"callback_url": f"{http_server.url}/ok", "payload": payload}
    assert api(users["client"]).post("/jobs/", body, format="json").status_code == 202
    for _ in range(8):
        payload = {"deeper": payload}
    body["payload"] = payload
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 400
    assert "nests deeper than 8 levels" in response.json()["detail"]


def test_huge_bodies_get_413_and_nothing_is_stored(api, users, http_server, settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "API_MAX_BODY_SIZE": 1000}
    body = {"callback_url": f"{http_server.url}/ok", "payload": {"text": "x" * 2000}}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 413
    assert "larger than 1000 bytes" in response.json()["detail"]
    assert not Job.objects.exists()
    body["payload"]["text"] = "x" * 100
    assert api(users["client"]).post("/jobs/", body, format="json").status_code == 202


def test_unicode_payload_round_trips(api, users, http_server):
    payload = {"name": "Zoë 😀 \u202e", "text": "tab\tnew\nline", "ключ": ["雪"]}
    body = {"callback_url": f"{http_server.url}/ok", "payload": payload}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 202
    assert Job.objects.get().kwargs["payload"] == payload


@pytest.mark.parametrize("payload", [{"text": "a\u0000b"}, {"k\u0000": 1}, ["\u0000"]])
def test_nul_characters_round_trip_on_every_database(api, users, http_server, payload):
    """U+0000 is valid JSON; PostgreSQL's jsonb cannot hold it as such, so it is stored
    wrapped (see StoredJSONField) and comes back as given, on every database."""
    body = {"callback_url": f"{http_server.url}/ok", "payload": payload}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 202
    assert Job.objects.get().kwargs["payload"] == payload


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_with_one_key_make_one_job(http_server):
    """Eight connections race to enqueue the same key: the unique constraint, not a
    check-then-insert, decides."""
    import threading

    from django.db import connections

    from asyncjobs.services import enqueue_callback

    barrier = threading.Barrier(8)
    ids, errors = [], []

    def create_one():
        try:
            barrier.wait(10)
            job, _ = enqueue_callback(
                url=f"{http_server.url}/ok", unique_key="race", now=timezone.now()
            )
            ids.append(job.pk)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(ids) == 8 and len(set(ids)) == 1
    assert Job.objects.filter(unique_key="race").count() == 1
