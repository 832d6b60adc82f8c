"""Security probes of outbound calls (callback jobs, webhooks) and of bad input (issue 24,
parts 1 and 3). Each test states the answer it expects; the suite runs on SQLite and on
PostgreSQL. The receivers are real HTTP servers on 127.0.0.1, in threads."""

import contextlib
import hashlib
import hmac
import json
import threading
import time
import tracemalloc
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from asyncjobs import outbound, retry
from asyncjobs.exceptions import ConfigurationError, JobCancelled
from asyncjobs.models import Attempt, AttemptOutcome, Job, JobStatus
from asyncjobs.services import cancel_job, enqueue_callback
from tests.conftest import start_in_thread, wait_until

pytestmark = pytest.mark.django_db

DRIP_INTERVAL = 0.2  # seconds between two bytes of a dripping receiver
HUGE = 400 * 1024 * 1024  # bytes a huge receiver announces and would send


class Receiver(BaseHTTPRequestHandler):
    """Answers by path, and records every request (method, path, headers, body):

    /ok 200; /fail 500; /hold waits for ``server.release`` then 500; /drip-headers sends its
    status line and headers one byte every DRIP_INTERVAL; /drip-body sends its headers, then
    the body one byte every DRIP_INTERVAL; /huge announces and streams 400 MB;
    /redirect?status=&to= redirects.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        server = self.server
        server.requests.append(
            {"method": self.command, "path": self.path, "headers": self.headers, "body": body}
        )
        server.arrived.set()
        path, _, query = self.path.partition("?")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            getattr(self, "answer_" + path.strip("/").replace("-", "_"), self.answer_ok)(query)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _send(self, status, body=b"{}", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data):
        for byte in data:
            if self.server.stopping.wait(DRIP_INTERVAL):
                return
            self.wfile.write(bytes([byte]))

    def answer_ok(self, query):
        self._send(200, b'{"ok": true}')

    def answer_fail(self, query):
        self._send(500)

    def answer_hold(self, query):
        self.server.release.wait(10)
        self._send(500)

    def answer_drip_headers(self, query):
        self._drip(
            b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 60 + b"\r\nContent-Length: 2\r\n\r\nok"
        )

    def answer_drip_body(self, query):
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self._drip(b"x" * 100)

    def answer_huge(self, query):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        chunk = b"z" * 65536
        while self.server.sent < HUGE and not self.server.stopping.is_set():
            self.wfile.write(chunk)
            self.server.sent += len(chunk)

    def answer_endless_headers(self, query):
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not self.server.stopping.is_set():
            self.wfile.write(b"X-Padding: " + b"a" * 1000 + b"\r\n")
            self.server.sent += 1000

    def answer_retry_after(self, query):
        self._send(503, headers=[("Retry-After", parse_qs(query)["value"][0])])

    def answer_redirect(self, query):
        params = {k: v[0] for k, v in parse_qs(query).items()}
        self._send(int(params["status"]), headers=[("Location", params["to"])])


def serve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    server.requests = []
    server.sent = 0
    server.arrived, server.release, server.stopping = (threading.Event() for _ in range(3))
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server


@pytest.fixture
def receiver():
    """A receiver on 127.0.0.1 (see ``Receiver``)."""
    server = serve()
    yield server
    server.stopping.set()
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def other_receiver():
    """A second receiver: another port, so another origin."""
    server = serve()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def deadline(settings):
    """Outbound calls get one second."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "OUTBOUND_TIMEOUT": 1}


def callback(url, **kwargs):
    kwargs.setdefault("max_attempts", 1)
    job, _ = enqueue_callback(url=url, now=timezone.now(), **kwargs)
    return job


# --- 1. Outbound calls are bounded ------------------------------------------------------


@pytest.mark.parametrize("path", ["/drip-headers", "/drip-body"])
def test_a_dripping_receiver_is_cut_off_at_the_deadline(receiver, runner, deadline, path):
    """Expected: the attempt ends after OUTBOUND_TIMEOUT (1 s) as a retryable timeout,
    although a byte arrives every 0.2 s (the drip lasts 8 s or more)."""
    job = callback(receiver.url + path)
    started = time.monotonic()
    runner().drain()
    elapsed = time.monotonic() - started
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    attempt = job.attempt_set.get()
    assert attempt.error_class == "asyncjobs.outbound.OutboundTimeoutError"
    assert 0.9 < elapsed < 5.0  # the drip lasts 20 s


def test_send_has_one_deadline_for_the_whole_call(receiver):
    """Expected: send() itself raises OutboundTimeoutError at its deadline."""
    started = time.monotonic()
    with pytest.raises(outbound.OutboundTimeoutError):
        outbound.send("GET", receiver.url + "/drip-body", timeout=timedelta(seconds=0.6))
    assert time.monotonic() - started < 3.0


def test_webhook_deliveries_have_a_job_timeout(receiver, runner, settings):
    """Expected: a delivery job carries a timeout (twice OUTBOUND_TIMEOUT), as callbacks do."""
    callback(receiver.url + "/ok", webhook_url=receiver.url + "/ok")
    runner().run_once()
    delivery = Job.objects.get(task_path="asyncjobs.outbound.deliver_webhook")
    assert delivery.timeout == timedelta(seconds=4)  # OUTBOUND_TIMEOUT is 2 s in the tests


def test_a_huge_response_is_not_read(receiver, runner):
    """Expected: a 400 MB answer succeeds with an excerpt; reading stops at
    OUTBOUND_MAX_RESPONSE_BYTES (64 KiB), so memory stays flat and the receiver gets to send
    little more than the socket buffers hold."""
    job = callback(receiver.url + "/huge", method="GET")
    tracemalloc.start()
    try:
        started = time.monotonic()
        runner().drain()
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.return_value["status"] == 200
    assert job.return_value["body"] == "z" * 4096  # CALLBACK_RESPONSE_LIMIT
    assert job.return_value["truncated"] is True
    assert peak < 8 * 1024 * 1024
    assert receiver.sent < 64 * 1024 * 1024
    assert elapsed < 5.0


def test_an_endless_response_head_is_refused(receiver):
    """Expected: OutboundConnectionError once the head passes 100 KiB (httpcore's limit),
    not a read until the deadline or memory runs out."""
    started = time.monotonic()
    with pytest.raises(outbound.OutboundConnectionError):
        outbound.send("GET", receiver.url + "/endless-headers", timeout=timedelta(seconds=10))
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    ("value", "delay"),
    [("7", timedelta(seconds=7)), ("\u00b2", None), ("99999999999", None), ("-1", None)],
)
def test_a_strange_retry_after_is_a_plain_retry(receiver, runner, value, delay):
    """Expected: a Retry-After of ASCII digits delays the retry; anything else ("²", which
    str.isdigit() accepts, or absurdly long) is an ordinary retryable 503."""
    job = callback(f"{receiver.url}/retry-after?value={quote(value)}", max_attempts=2)
    now = timezone.now()
    runner().run_once(now=now)
    job.refresh_from_db()
    attempt = job.attempt_set.get()
    assert attempt.http_status == 503
    if delay is None:
        assert attempt.error_class == "asyncjobs.outbound.RetryableHTTPError"
    else:
        assert job.run_after == now + delay


def test_the_excerpt_is_capped_in_bytes(receiver, settings):
    """Expected: send() keeps exactly OUTBOUND_MAX_RESPONSE_BYTES of a longer body."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "OUTBOUND_MAX_RESPONSE_BYTES": 1000}
    response = outbound.send("GET", receiver.url + "/huge")
    assert (response.status_code, len(response.content), response.truncated) == (200, 1000, True)
    short = outbound.send("GET", receiver.url + "/ok")
    assert (short.content, short.truncated) == (b'{"ok": true}', False)


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_callback_is_not_retried(receiver, runner):
    """Expected: cancelling a callback job while its request is in flight (the API answers
    200) ends it ``cancelled`` after that attempt: one request, no retry. (It used to be
    retried to its 5th attempt.)"""
    job = callback(receiver.url + "/hold", max_attempts=5, backoff=retry.Fixed(timedelta(0)))
    done = start_in_thread(lambda: runner().drain())
    assert receiver.arrived.wait(10)
    assert cancel_job(job.pk).cancel_requested_at is not None
    receiver.release.set()
    done()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.attempts == 1
    assert len(receiver.requests) == 1
    assert job.attempt_set.get().http_status == 500


def test_a_cancel_request_stops_a_call_in_flight(receiver):
    """Expected: a call whose job is asked to cancel stops within CANCEL_POLL (0.5 s) with
    JobCancelled, long before its deadline; and one cancelled before it starts sends
    nothing."""
    event = threading.Event()
    timer = threading.Timer(0.3, event.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        outbound.send(
            "GET", receiver.url + "/drip-body", timeout=timedelta(seconds=10), cancel_event=event
        )
    assert time.monotonic() - started < 3.0
    timer.join()
    count = len(receiver.requests)
    with pytest.raises(JobCancelled):
        outbound.send("GET", receiver.url + "/ok", cancel_event=event)
    assert len(receiver.requests) == count


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_four_drippers_do_not_freeze_a_worker(receiver, worker_process):
    """Expected: a real runworker with 4 slots, given 4 dripping receivers (20 s of drip
    each) and one that answers at once, is done with all five in about one OUTBOUND_TIMEOUT
    (2 s in the tests), not after the drips (the issue measured 93 s frozen)."""
    drips = [callback(receiver.url + "/drip-body", priority=10) for _ in range(4)]
    ok = callback(receiver.url + "/ok")
    worker = worker_process("--burst", "--concurrency", "4")
    assert worker.wait(60) == 0, worker.output()
    # Timed from the attempts' own records, not the wall clock around the process: a worker
    # that starts slowly on a busy machine says nothing about the drips.
    first_start = Attempt.objects.filter(job__in=drips).earliest("started_at").started_at
    served = Attempt.objects.get(job=ok)
    assert served.outcome == AttemptOutcome.SUCCEEDED
    assert (served.started_at - first_start).total_seconds() < 10, worker.output()
    for job in drips:
        job.refresh_from_db()
        assert job.status == JobStatus.FAILED
        attempt = job.attempt_set.get()
        assert attempt.error_class == "asyncjobs.outbound.OutboundTimeoutError"
        assert (attempt.finished_at - attempt.started_at).total_seconds() < 10


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cancel_reaches_a_call_in_flight_in_a_real_worker(receiver, worker_process):
    """Expected: with a 30 s deadline and a receiver that holds the request, cancelling the
    job ends it ``cancelled`` within a heartbeat (0.5 s) plus a read slice (0.5 s), with one
    request made and the attempt recorded ``cancelled``."""
    job = callback(receiver.url + "/hold", max_attempts=5, backoff=retry.Fixed(timedelta(0)))
    worker_process(
        "--concurrency", "1", heartbeat=0.5, extra_env={"ASYNCJOBS_TEST_OUTBOUND_TIMEOUT": "30"}
    )
    assert receiver.arrived.wait(30)
    started = time.monotonic()
    cancel_job(job.pk)
    wait_until(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED,
        timeout=15,
        message="the cancel to reach the call",
    )
    assert time.monotonic() - started < 5
    job.refresh_from_db()
    assert job.attempts == 1
    assert job.attempt_set.get().outcome == AttemptOutcome.CANCELLED
    assert len(receiver.requests) == 1


CREDENTIALS = {
    "Authorization": "Bearer s3cr3t",
    "Cookie": "session=s3cr3t",
    "X-Api-Key": "s3cr3t",
    "X-Trace": "custom",
}


def redirect(server, status, to):
    return f"{server.url}/redirect?status={status}&to={quote(to, safe='')}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_cross_origin_redirect_drops_credentials_and_custom_headers(
    receiver, other_receiver, status
):
    """Expected (browser fetch semantics): after a redirect to another origin no header the
    caller set is sent but Content-Type; 307/308 keep the method and the body (now without
    credentials); 301/302 after POST and 303 become a GET without a body."""
    url = redirect(receiver, status, other_receiver.url + "/ok")
    response = outbound.send(
        "POST",
        url,
        headers={"Content-Type": "application/json", **CREDENTIALS},
        content=b'{"order": 1}',
    )
    assert response.status_code == 200
    (first,) = receiver.requests
    assert first["headers"]["Authorization"] == "Bearer s3cr3t"
    (second,) = other_receiver.requests
    for name in CREDENTIALS:
        assert name not in second["headers"], name
    if status in (307, 308):
        assert (second["method"], second["body"]) == ("POST", b'{"order": 1}')
        assert second["headers"]["Content-Type"] == "application/json"
    else:
        assert (second["method"], second["body"]) == ("GET", b"")
        assert "Content-Type" not in second["headers"]


def test_a_same_origin_redirect_keeps_the_headers(receiver):
    """Expected: a redirect within the origin keeps every header, and a 307 the body."""
    outbound.send("POST", redirect(receiver, 307, "/ok"), headers=CREDENTIALS, content=b"body")
    _first, second = receiver.requests
    assert second["path"] == "/ok"
    assert second["headers"]["Authorization"] == "Bearer s3cr3t"
    assert second["headers"]["X-Trace"] == "custom"
    assert (second["method"], second["body"]) == ("POST", b"body")


def test_headers_dropped_once_stay_dropped(receiver, other_receiver):
    """Expected: A -> B -> A: the credentials dropped for B are not sent back to A."""
    back = redirect(other_receiver, 307, receiver.url + "/ok")
    outbound.send("POST", redirect(receiver, 307, back), headers=CREDENTIALS, content=b"x")
    assert [r["path"] for r in receiver.requests][-1] == "/ok"
    assert "Authorization" not in receiver.requests[-1]["headers"]


def test_a_webhook_signature_does_not_follow_a_cross_origin_redirect(
    receiver, other_receiver, runner
):
    """Expected: the webhook's signature (replayable for 5 minutes) reaches only the URL
    that was configured, not the origin it redirects to."""
    callback(receiver.url + "/ok", webhook_url=redirect(receiver, 307, other_receiver.url + "/ok"))
    runner().drain()
    signed = [r for r in receiver.requests if outbound.SIGNATURE_HEADER in r["headers"]]
    assert len(signed) == 1
    (forwarded,) = other_receiver.requests
    assert outbound.SIGNATURE_HEADER not in forwarded["headers"]


TRANSITION_ADDRESSES = [
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:808:808::1",  # 6to4 of a public address: still refused
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::808:808",  # NAT64 of a public address: still refused
    "64:ff9b:1::a00:1",  # local-use NAT64
    "::7f00:1",  # IPv4-compatible 127.0.0.1 (deprecated)
    "::808:808",  # IPv4-compatible public address
    "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
    "::ffff:169.254.169.254",  # IPv4-mapped metadata address
    "::ffff:10.0.0.1",  # IPv4-mapped private address
    "fec0::1",  # site-local (deprecated)
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",  # documentation
    "100::1",  # discard
    "::",
    "::1",
    "fe80::1",
    "fd00::1",
    "ff02::1",
]
REFUSED_IPV4 = [
    "0.0.0.0",
    "10.0.0.1",
    "100.64.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "172.16.0.1",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
]


@pytest.mark.parametrize("address", TRANSITION_ADDRESSES + REFUSED_IPV4)
def test_special_addresses_are_refused(settings, address):
    """Expected: refused at enqueue (validate_url) and when sending, whatever
    ``ipaddress.is_global`` says in this Python."""
    settings.ASYNCJOBS = {
        **settings.ASYNCJOBS,
        "OUTBOUND_ALLOWED_URLS": (r"^https?://",),
        "OUTBOUND_ALLOWED_NETWORKS": (),
    }
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(outbound.OutboundURLRefusedError):
        outbound.validate_url(f"http://{literal}/")
    with pytest.raises(outbound.OutboundURLRefusedError):
        outbound.send("GET", f"http://{literal}/")
    assert outbound.address_refusal(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"]
)
def test_public_addresses_pass(settings, address):
    """Expected: public unicast addresses (IPv4-mapped judged as IPv4) may be called."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "OUTBOUND_ALLOWED_NETWORKS": ()}
    assert outbound.address_refusal(address) is None


def test_an_embedded_address_is_named_in_the_refusal():
    assert "127.0.0.1" in outbound.address_refusal("2002:7f00:1::1")
    assert "169.254.169.254" in outbound.address_refusal("64:ff9b::a9fe:a9fe")


@pytest.mark.parametrize("field", ["callback_url", "webhook_url"])
@pytest.mark.parametrize("port", ["65536", "99999", "0"])
def test_a_port_out_of_range_is_a_400(api, users, receiver, field, port):
    """Expected: 400 with a field error (it was a 500)."""
    body = {"callback_url": receiver.url + "/ok", field: f"http://127.0.0.1:{port}/ok"}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Job.objects.exists()


def test_credential_headers_are_redacted_in_the_admin(admin_client, receiver):
    """Expected: the job page shows the header names, never the credential values."""
    job = callback(receiver.url + "/ok", headers=CREDENTIALS)
    page = admin_client.get(reverse("admin:asyncjobs_job_change", args=[job.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "s3cr3t" not in text
    assert "Authorization" in text and "[redacted]" in text
    assert "custom" in text  # X-Trace is not a credential


def test_the_api_never_shows_the_call_headers(api, users, receiver):
    """Expected: the creation answer and the job's page carry no header value."""
    body = {"callback_url": receiver.url + "/ok", "headers": CREDENTIALS}
    created = api(users["client"]).post("/jobs/", body, format="json")
    assert created.status_code == 202
    polled = api(users["client"]).get(f"/jobs/{created.json()['id']}/")
    assert polled.status_code == 200
    assert b"s3cr3t" not in created.content + polled.content


def test_redact_headers():
    assert outbound.redact_headers(
        {"Authorization": "a", "proxy-authorization": "b", "X-Auth-Token": "c", "Accept": "d"}
    ) == {
        "Authorization": "[redacted]",
        "proxy-authorization": "[redacted]",
        "X-Auth-Token": "[redacted]",
        "Accept": "d",
    }


# --- 3. Bad input never gives a 500 -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"payload": "\\ud800"', "payload"),
        ('"payload": {"a": ["ok", "\\udfff"]}', "payload"),
        ('"payload": {"\\ud800": 1}', "payload"),
        ('"idempotency_key": "\\ud800"', "idempotency_key"),
        ('"headers": {"X-A": "\\ud800"}', "headers"),
        ('"headers": {"X-\\ud800": "v"}', "headers"),
        ('"queue": "\\ud800"', "queue"),
    ],
)
def test_lone_surrogates_are_a_400(api, users, receiver, raw, field):
    """Expected: 400 with a field error on every database (PostgreSQL's jsonb answered a
    500)."""
    body = f'{{"callback_url": "{receiver.url}/ok", {raw}}}'.encode()
    response = api(users["client"]).post("/jobs/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Job.objects.exists()


def test_lone_surrogates_round_trip_through_enqueue(backend):
    """Expected: Python's enqueue() takes them (JSON-serializable, stored on every database;
    see tests/test_backend.py), while the API refuses them (I-JSON) with a 400 above."""
    from tests.tasks import record

    result = record.enqueue({"nested": ["\udc00"]})
    assert Job.objects.get(pk=result.id).args == [{"nested": ["\udc00"]}]


@pytest.mark.parametrize("token", ["Bearer é", "Bearer \u00ff\u00fe", "Bearer s\u00e9cret"])
def test_a_non_ascii_metrics_token_is_refused(client, settings, token):
    """Expected: 403, as for any wrong token (it was a 500: compare_digest's TypeError)."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "METRICS_TOKEN": "scrape-me"}
    assert client.get("/metrics/", HTTP_AUTHORIZATION=token).status_code == 403
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


SECRET = "s3cret"


@pytest.mark.parametrize(
    "header",
    [
        "t=" + "9" * 400 + ",v1=" + "0" * 64,  # a 400-digit timestamp
        "t={now},v1=" + "é" * 64,  # non-ASCII signature
        "t={now},v1=\u2603",
        "t={now},v1=",
        "t=,v1=" + "0" * 64,
        "t=-5,v1=" + "0" * 64,
        "t=1e9,v1=" + "0" * 64,
        "t=\u0661\u0662,v1=" + "0" * 64,  # Arabic-Indic digits: int() would take them
        "t={now},t={now},v1=" + "0" * 64,
        "v1=" + "0" * 64,
        "t={now}",
        "=,=,=",
        ",,,",
        "t={now},v1=" + "0" * 100_000,
    ],
)
def test_verify_signature_raises_only_its_own_error(header):
    """Expected: WebhookSignatureError, never OverflowError, TypeError or ValueError."""
    header = header.replace("{now}", str(int(time.time())))
    with pytest.raises(outbound.WebhookSignatureError):
        outbound.verify_signature(b"{}", header, secret=SECRET)


@hypothesis_settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=200), body=st.binary(max_size=50))
def test_verify_signature_on_any_text_raises_only_its_own_error(header, body):
    """Expected: whatever the header holds, WebhookSignatureError or nothing."""
    with contextlib.suppress(outbound.WebhookSignatureError):
        outbound.verify_signature(body, header, secret=SECRET)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil: injected": "v"},
        {"X-A:": "v"},
        {"X A": "v"},
        {"": "v"},
        {"X-\u00e9": "v"},
        {"X-A\r\nX-B": "v"},
        {"Host": "evil"},
        {"transfer-encoding": "chunked"},
        {"Accept-Encoding": "gzip"},
        {"X-A": "one\r\nX-Injected: two"},
        {"X-A": "nul\u0000"},
        {"X-A": "snow \u2603"},
        {"X-A": "x" * 5000},
    ],
)
def test_invalid_headers_are_refused_at_creation(api, users, receiver, headers):
    """Expected: 400 with a ``headers`` field error from the API, InvalidHeaderError from
    enqueue_callback; nothing stored (a name with ``:`` used to be stored and fail later)."""
    body = {"callback_url": receiver.url + "/ok", "headers": headers}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 400
    assert "headers" in response.json()
    with pytest.raises(outbound.InvalidHeaderError):
        enqueue_callback(url=receiver.url + "/ok", headers=headers, now=timezone.now())
    assert not Job.objects.exists()


def test_valid_headers_are_sent(receiver, runner):
    callback(receiver.url + "/ok", headers={"X-Request-Id": "abc-1", "Accept": "*/*"})
    runner().drain()
    (request,) = receiver.requests
    assert request["headers"]["X-Request-Id"] == "abc-1"


def _v1(secret, header, body):
    t = header.split(",")[0].removeprefix("t=")
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_webhook_secrets_rotate(settings, receiver, runner):
    """Expected: with WEBHOOK_SECRET a list, deliveries are signed with the first key, and
    verify_signature given the list accepts a signature made with any of them."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "WEBHOOK_SECRET": ["new-key", "old-key"]}
    callback(receiver.url + "/ok", webhook_url=receiver.url + "/ok")
    runner().drain()
    (delivery,) = [r for r in receiver.requests if outbound.SIGNATURE_HEADER in r["headers"]]
    header, body = delivery["headers"][outbound.SIGNATURE_HEADER], delivery["body"]
    assert header.endswith("v1=" + _v1("new-key", header, body))
    outbound.verify_signature(body, header, secret="new-key")
    outbound.verify_signature(body, header, secret=["old-key", "new-key"])
    with pytest.raises(outbound.WebhookSignatureError):
        outbound.verify_signature(body, header, secret="old-key")
    old = outbound.sign(body, secret="old-key")
    outbound.verify_signature(body, old, secret=("new-key", "old-key"))


def test_verify_signature_refuses_an_unusable_secret():
    """Expected: ConfigurationError (the receiver's mistake), not a signature verdict."""
    body = b"{}"
    for secret in ("", [], [""], [b"ok", 3]):
        with pytest.raises(ConfigurationError):
            outbound.verify_signature(body, outbound.sign(body, secret="k"), secret=secret)


@pytest.mark.parametrize("secret", ["", [], [""], ["ok", 3], 5, {"a": "b"}])
def test_an_unusable_webhook_secret_is_a_400_not_a_500(api, users, receiver, settings, secret):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "WEBHOOK_SECRET": secret}
    body = {"callback_url": receiver.url + "/ok", "webhook_url": receiver.url + "/ok"}
    response = api(users["client"]).post("/jobs/", body, format="json")
    assert response.status_code == 400
    assert "webhook_url" in response.json()


def test_receiver_json_roundtrip(receiver):
    """The receivers answer what the probes above expect of them."""
    response = outbound.send("GET", receiver.url + "/ok")
    assert json.loads(response.text) == {"ok": True}
    assert urlsplit(response.url).path == "/ok"
