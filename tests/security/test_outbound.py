"""Security probes of outbound calls (callback jobs, webhooks) and of bad input (issue 24,
parts 1 and 3). Each test states the answer it expects; the suite runs on SQLite and on
PostgreSQL. The receivers are real HTTP servers on 127.0.0.1, in threads."""

import contextlib
import hashlib
import hmac
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote

import pytest
from django.utils import timezone

from asyncjobs import retry
from asyncjobs.exceptions import InvalidArgumentsError
from asyncjobs.models import Job, JobStatus
from asyncjobs.services import cancel_job, enqueue_callback
from tests.conftest import start_in_thread

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


CREDENTIALS = {
    "Authorization": "Bearer s3cr3t",
    "Cookie": "session=s3cr3t",
    "X-Api-Key": "s3cr3t",
    "X-Trace": "custom",
}


def redirect(server, status, to):
    return f"{server.url}/redirect?status={status}&to={quote(to, safe='')}"


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


# --- 3. Bad input never gives a 500 -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"payload": "\\ud800"', "payload"),
        ('"payload": {"a": ["ok", "\\udfff"]}', "payload"),
        ('"payload": {"\\ud800": 1}', "payload"),
        ('"idempotency_key": "\\ud800"', "idempotency_key"),
        ('"headers": {"X-A": "\\ud800"}', "headers"),
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


def test_lone_surrogates_fail_at_enqueue(backend):
    """Expected: InvalidArgumentsError at enqueue(), before anything is stored."""
    from tests.tasks import record

    with pytest.raises(InvalidArgumentsError, match="surrogate"):
        record.enqueue("\ud800")
    with pytest.raises(InvalidArgumentsError, match="surrogate"):
        record.enqueue({"nested": ["\udc00"]})
    assert not Job.objects.exists()
    record.enqueue("😀 beyond the BMP is fine")


@pytest.mark.parametrize("token", ["Bearer é", "Bearer \u00ff\u00fe", "Bearer s\u00e9cret"])
def test_a_non_ascii_metrics_token_is_refused(client, settings, token):
    """Expected: 403, as for any wrong token (it was a 500: compare_digest's TypeError)."""
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "METRICS_TOKEN": "scrape-me"}
    assert client.get("/metrics/", HTTP_AUTHORIZATION=token).status_code == 403
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


SECRET = "s3cret"


def _v1(secret, header, body):
    t = header.split(",")[0].removeprefix("t=")
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
