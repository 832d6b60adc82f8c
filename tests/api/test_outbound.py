"""Outbound safety: allow-list, private addresses, redirects, DNS names; and signatures."""

import json
import time
from datetime import timedelta

import pytest

from asyncjobs import outbound
from asyncjobs.models import Job, JobStatus
from asyncjobs.services import enqueue_callback

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_allow_list(settings):
    """Every http(s) URL on the allow-list, no private network allowed: only the address
    checks stand."""
    settings.ASYNCJOBS = {
        **settings.ASYNCJOBS,
        "OUTBOUND_ALLOWED_URLS": (r"^https?://",),
        "OUTBOUND_ALLOWED_NETWORKS": (),
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",  # a DNS name that resolves to loopback
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
    ],
)
def test_private_addresses_are_refused(open_allow_list, url):
    with pytest.raises(outbound.OutboundURLRefusedError):
        outbound.validate_url(url)
    with pytest.raises(outbound.OutboundURLRefusedError):
        outbound.send("GET", url)


def test_public_address_passes_the_checks(open_allow_list):
    assert outbound._address_allowed("93.184.216.34")
    assert outbound._address_allowed("2606:2800:220:1:248:1893:25c8:1946")


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1/", "http://user:pw@127.0.0.1:9/", "/x"]
)
def test_bad_schemes_and_credentials_are_refused(url):
    with pytest.raises(outbound.OutboundURLRefusedError):
        outbound.check_url(url)


def test_allow_list_is_required(settings):
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "OUTBOUND_ALLOWED_URLS": ()}
    with pytest.raises(outbound.OutboundURLRefusedError, match="OUTBOUND_ALLOWED_URLS"):
        outbound.check_url("http://127.0.0.1:9/")


def test_redirect_to_a_refused_address_fails_the_job(http_server, runner):
    from django.utils import timezone

    job, _ = enqueue_callback(url=f"{http_server.url}/redirect-metadata", now=timezone.now())
    runner().drain()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    attempt = job.attempt_set.get()
    assert attempt.error_class == "asyncjobs.outbound.OutboundURLRefusedError"
    assert "169.254.169.254" in attempt.error_message
    assert [r["path"] for r in http_server.requests] == ["/redirect-metadata"]


def test_allowed_redirect_is_followed(http_server, runner):
    from django.utils import timezone

    job, _ = enqueue_callback(
        url=f"{http_server.url}/redirect-ok", method="GET", now=timezone.now()
    )
    runner().drain()
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED
    assert [r["path"] for r in http_server.requests] == ["/redirect-ok", "/ok"]


SECRET = "s3cret"


def test_signature_round_trip():
    body = json.dumps({"id": "x", "status": "succeeded"}).encode()
    header = outbound.sign(body, secret=SECRET)
    outbound.verify_signature(body, header, secret=SECRET)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, header: (body + b" ", header),  # body changed
        lambda body, header: (body, header.replace("v1=", "v1=0")),  # signature changed
        lambda body, header: (body, header.replace("t=", "t=1")),  # timestamp changed
        lambda body, header: (body, None),
        lambda body, header: (body, "garbage"),
    ],
)
def test_signature_rejects_tampering(tamper):
    body = b'{"id":"x"}'
    body2, header2 = tamper(body, outbound.sign(body, secret=SECRET))
    with pytest.raises(outbound.WebhookSignatureError):
        outbound.verify_signature(body2, header2, secret=SECRET)


def test_signature_rejects_wrong_secret_and_replays():
    body = b"{}"
    with pytest.raises(outbound.WebhookSignatureError, match="does not match"):
        outbound.verify_signature(body, outbound.sign(body, secret="other"), secret=SECRET)
    old = outbound.sign(body, secret=SECRET, timestamp=int(time.time()) - 600)
    with pytest.raises(outbound.WebhookSignatureError, match="replay"):
        outbound.verify_signature(body, old, secret=SECRET)
    outbound.verify_signature(body, old, secret=SECRET, tolerance=timedelta(minutes=15))
