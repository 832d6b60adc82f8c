"""Rate limits on job creation and event streams, and the cap on open event streams.

Rates and stream slots live in Django's cache (the tests' ``LocMemCache``, cleared between
tests); every wait is bounded.
"""

import socket
import time
from datetime import timedelta

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from freezegun import freeze_time
from rest_framework.test import APIClient

from asyncjobs.api import throttling
from asyncjobs.api.views import JobEventsView
from asyncjobs.conf import DEFAULTS
from asyncjobs.tokens import make_token
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

BODY = {"callback_url": "http://127.0.0.1:9/hook", "payload": {}}


def set_option(settings, **values):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, **values}


def create(client):
    return client.post("/jobs/", BODY, format="json")


def close(response):
    """What a server does when the client goes away: close the response, unread."""
    request_finished.disconnect(close_old_connections)  # keep the test's connection
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def test_job_creation_has_a_default_rate(api, users):
    assert DEFAULTS["API_THROTTLE_RATES"]["create"] == "60/min"
    client = api(users["client"])
    statuses = [create(client).status_code for _ in range(61)]
    assert statuses == [202] * 60 + [429]
    refused = create(client)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert create(api(users["operator"])).status_code == 202  # per caller


def test_rates_are_settings(api, users, settings):
    set_option(settings, API_THROTTLE_RATES={"create": "2/min"})
    client = api(users["client"])
    assert [create(client).status_code for _ in range(3)] == [202, 202, 429]
    assert throttling.configured_rate("events") == "60/min"  # the other keeps its default
    set_option(settings, API_THROTTLE_RATES={"create": None})
    assert {create(client).status_code for _ in range(5)} == {202}
    set_option(settings, API_THROTTLE_RATES=None)
    assert throttling.configured_rate("events") is None


def test_listing_is_not_counted_as_creating(api, users, settings):
    set_option(settings, API_THROTTLE_RATES={"create": "1/min"})
    client = api(users["operator"])
    assert {client.get("/jobs/").status_code for _ in range(3)} == {200}
    assert create(client).status_code == 202


def test_opening_event_streams_has_a_rate(api, users, settings, runner):
    set_option(settings, API_THROTTLE_RATES={"events": "2/min"})
    result = tasks.add.enqueue(1, 1)
    runner().drain()  # finished: each stream ends at once
    client = api(users["staff"])
    statuses = []
    for _ in range(3):
        response = client.get(f"/jobs/{result.id}/events/")
        statuses.append(response.status_code)
        if response.streaming:
            b"".join(response.streaming_content)
    assert statuses == [200, 200, 429]


def open_stream(client, job_id, **extra):
    """Open an event stream without reading it (its slot is taken when it opens)."""
    return client.get(f"/jobs/{job_id}/events/", **extra)


def test_concurrent_streams_are_capped_per_caller(api, users, settings):
    set_option(settings, API_EVENTS_MAX_STREAMS=2)
    job = tasks.add.enqueue(1, 1)  # stays queued: its streams would stay open
    staff = api(users["staff"])
    first, second = open_stream(staff, job.id), open_stream(staff, job.id)
    assert (first.status_code, second.status_code) == (200, 200)
    third = open_stream(staff, job.id)
    assert third.status_code == 429
    assert "at most 2" in third.json()["detail"]
    other = open_stream(api(users["operator"]), job.id)  # another caller has its own slots
    assert other.status_code == 200
    close(first)  # the client went away
    fourth = open_stream(staff, job.id)
    assert fourth.status_code == 200
    for response in (second, other, fourth):
        close(response)


def test_a_stream_that_ends_gives_its_slot_back(api, users, settings, runner):
    set_option(settings, API_EVENTS_MAX_STREAMS=1, API_EVENTS_MAX_DURATION=0.3)
    job = tasks.add.enqueue(1, 1)
    staff = api(users["staff"])
    timed_out = open_stream(staff, job.id)
    assert open_stream(staff, job.id).status_code == 429
    assert b"event: timeout" in b"".join(timed_out.streaming_content)
    runner().drain()
    ended = open_stream(staff, job.id)
    assert ended.status_code == 200
    assert b"event: end" in b"".join(ended.streaming_content)
    close(open_stream(staff, job.id))


def test_token_holders_are_capped_by_address(api, settings):
    set_option(settings, API_EVENTS_MAX_STREAMS=1)
    job = tasks.add.enqueue(1, 1)
    token = make_token(job.id)
    held = open_stream(api(None), job.id, HTTP_X_JOB_TOKEN=token)
    assert held.status_code == 200
    assert open_stream(api(None), job.id, HTTP_X_JOB_TOKEN=token).status_code == 429
    elsewhere = open_stream(APIClient(REMOTE_ADDR="10.0.0.9"), job.id, HTTP_X_JOB_TOKEN=token)
    assert elsewhere.status_code == 200
    close(held)
    close(elsewhere)


def test_a_slot_left_by_a_dead_process_expires(rf):
    """A process killed with streams open never releases their slots; they expire."""
    with freeze_time("2026-01-01 00:00:00") as clock:
        drf_request = _drf_request(rf)
        slots = [throttling.StreamSlot.acquire(drf_request) for _ in range(5)]
        assert all(slots) and throttling.StreamSlot.acquire(drf_request) is None
        clock.tick(timedelta(seconds=throttling.SLOT_TTL - 1))
        slots[0].refresh()  # an open stream keeps its slot
        clock.tick(timedelta(seconds=2))
        assert throttling.StreamSlot.acquire(drf_request) is not None  # four expired
        assert sum(throttling.StreamSlot.acquire(drf_request) is not None for _ in range(5)) == 3


def _drf_request(rf):
    from django.contrib.auth.models import AnonymousUser
    from rest_framework.request import Request

    request = Request(rf.get("/jobs/x/events/", REMOTE_ADDR="192.0.2.7"))
    request.user = AnonymousUser()
    return request


@pytest.mark.django_db(transaction=True)
def test_a_client_that_disconnects_gives_its_slot_back(live_server, settings, monkeypatch):
    """Through a real HTTP server: the client closes its socket mid-stream; the server's
    next write fails, it closes the response, and the slot is free again."""
    set_option(settings, API_EVENTS_MAX_STREAMS=1)
    monkeypatch.setattr(JobEventsView, "keepalive_interval", 0.2)
    job = tasks.add.enqueue(1, 1)
    host, port = live_server.url.removeprefix("http://").split(":")
    request = (
        f"GET /jobs/{job.id}/events/ HTTP/1.1\r\nHost: {host}\r\n"
        f"X-Job-Token: {make_token(job.id)}\r\nConnection: close\r\n\r\n"
    ).encode()

    def open_raw():
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        return sock, head.split(b"\r\n", 1)[0]

    sock, status = open_raw()
    assert b" 200 " in status
    second, status = open_raw()
    assert b" 429 " in status
    second.close()
    sock.close()  # the client goes away

    def reopened():
        again, status = open_raw()
        again.close()
        return b" 200 " in status

    started = time.monotonic()
    wait_until(reopened, timeout=10, interval=0.2, message="the slot to come back")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, []),
        ({"API_THROTTLE_RATES": None, "API_EVENTS_MAX_STREAMS": None}, []),
        ({"API_THROTTLE_RATES": {"create": "10/s", "events": None}}, []),
        ({"API_THROTTLE_RATES": {"create": "3/10s"}}, ["asyncjobs.E030"]),
        ({"API_THROTTLE_RATES": {"craete": "1/min"}}, ["asyncjobs.E030"]),
        ({"API_THROTTLE_RATES": "60/min"}, ["asyncjobs.E030"]),
        ({"API_EVENTS_MAX_STREAMS": 0}, ["asyncjobs.E031"]),
        ({"API_EVENTS_MAX_STREAMS": "5"}, ["asyncjobs.E031"]),
    ],
)
def test_bad_limits_are_reported_by_the_system_check(settings, values, expected):
    """A rate DRF cannot parse would fail (500) the first request it limits: the system
    check reports it at start-up instead."""
    from asyncjobs.checks import check_api_limits

    set_option(settings, **values)
    assert [e.id for e in check_api_limits()] == expected
